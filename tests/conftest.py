"""Shared fixtures: tiny models in the real on-disk formats, built once per session; and
the seeds: fixed for every random test, hypothesis's included (tests/support/seeds.py),
and printed under a failure."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import hypothesis.core
import pytest
from hypothesis import settings

from virnuc.pipeline.tiny_models import build_tiny_bert, build_tiny_esm2

from tests.support import seeds
from tests.support.unix_users import unix_users  # noqa: F401  (a session fixture)

# Hypothesis draws its examples from a seed derived from each test (derandomize), so
# every run tries the same ones; VIRNUC_TEST_SEED gives them all that seed instead.
settings.register_profile("virnuc", derandomize=seeds.override() is None)
settings.load_profile("virnuc")
if seeds.override() is not None:
    hypothesis.core.global_force_seed = seeds.override()


def pytest_runtest_setup() -> None:
    """One torch thread in the test process. The tests' tensors are tiny, and on a
    machine whose cores are busy, torch's spinning worker threads make them several
    times slower (test_predict.py: 11 s with one thread, 62 s with two on 2 busy cores).
    Workers are other processes and keep their own threads (OMP_NUM_THREADS)."""
    torch = sys.modules.get("torch")  # never imported here: client-only runs stay light
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def pytest_report_header() -> str:
    chosen = seeds.override()
    if chosen is None:
        return f"seeds: fixed per test ({seeds.ENV}=N overrides them all)"
    return f"seeds: all {chosen} ({seeds.ENV})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    used = seeds.used_by(item.nodeid)
    if report.failed and used:
        rerun = f"{seeds.ENV}={used[0]} pytest '{item.nodeid}'"
        report.sections.append(("seeds", f"seeds used: {used}; rerun: {rerun}"))


@pytest.fixture(scope="session")
def tiny_esm2_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ESM-2 checkpoint (``esm2_t2_demo.pt``) with its contact-regression file."""
    return build_tiny_esm2(tmp_path_factory.mktemp("esm2"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DNABERT-S-like directory (BPE tokenizer + BERT) that AutoModel loads."""
    return build_tiny_bert(tmp_path_factory.mktemp("dnabert"))


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir holding the demo profile's models, built once (as `make demo` does)."""
    from virnuc.pipeline.models import ensure_demo_models
    from virnuc.pipeline.spec import demo_spec

    cache = tmp_path_factory.mktemp("cache")
    ensure_demo_models(demo_spec(cache))
    return cache


@pytest.fixture(scope="session")
def demo_models(demo_cache: Path):  # -> ModelSet; torch is imported lazily
    from virnuc.pipeline.models import ModelSet
    from virnuc.pipeline.spec import demo_spec

    return ModelSet.load(demo_spec(demo_cache))
