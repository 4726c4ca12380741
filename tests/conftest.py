"""Shared fixtures: tiny models in the real on-disk formats, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnuc.pipeline.tiny_models import build_tiny_bert, build_tiny_esm2


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
