"""pipeline/spec.py: user options turned into the complete ModelSpec of a job."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnuc.pipeline.spec import (
    DEFAULT_DNABERT,
    DEFAULT_ESM,
    DEMO_VERSION,
    ModelSpecError,
    resolve_spec,
)


def test_a_classifier_alone_gets_the_default_embedders_and_its_names_chunk_length(
    tmp_path: Path,
) -> None:
    spec = resolve_spec(classifier=str(tmp_path / "500_model.pth"))
    assert spec.esm == DEFAULT_ESM
    assert spec.dnabert == DEFAULT_DNABERT
    assert spec.classifier == str(tmp_path.resolve() / "500_model.pth")
    assert (spec.chunk_length, spec.profile, spec.precision) == (500, None, "fp32")
    assert resolve_spec(classifier=str(tmp_path / "mine.pth")).chunk_length == 300
    assert (
        resolve_spec(classifier=str(tmp_path / "500_m.pth"), chunk_length=300).chunk_length == 300
    )


def test_the_demo_profile_names_its_models_under_the_cache_dir(tmp_path: Path) -> None:
    spec = resolve_spec(profile="demo", chunk_length=500, precision="bf16", cache_dir=tmp_path)
    root = tmp_path.resolve() / DEMO_VERSION
    assert spec.classifier == str(root / "classifier.pth")
    assert spec.dnabert == str(root / "dnabert")
    assert (spec.chunk_length, spec.profile, spec.precision) == (500, "demo", "bf16")


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"classifier": "/m/300_model.pth", "chunk_length": 400}, "must be 300 or 500, not 400"),
        ({"classifier": "/m/300_model.pth", "precision": "fp16"}, "--precision must be one of"),
        ({"profile": "huge"}, "unknown profile 'huge'"),
        ({"profile": "demo", "esm": "x"}, "replaces --esm/--dnabert/--classifier"),
        ({}, "no classifier"),
    ],
)
def test_options_that_make_no_spec_are_refused(options: dict[str, object], problem: str) -> None:
    with pytest.raises(ModelSpecError, match=problem):
        resolve_spec(**options)  # type: ignore[arg-type]
