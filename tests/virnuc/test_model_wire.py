"""virnuc/model_wire.py: a job's ModelSpec to and from its form on the worker wire."""

from __future__ import annotations

from virnuc.model_wire import spec_from_wire, spec_to_wire
from virnuc.pipeline.spec import DEFAULT_PRECISION, ModelSpec


def test_a_spec_survives_the_assign_wire_unchanged() -> None:
    spec = ModelSpec("/m/esm.pt", "/m/bert", "/m/c.pth", 500, profile="demo", precision="bf16")
    wire = spec_to_wire(spec)
    assert wire.to_wire()["precision"] == "bf16"
    assert spec_from_wire(wire) == spec


def test_a_loaded_models_map_gives_its_spec_and_an_older_workers_map_the_defaults() -> None:
    described = {
        "esm": "/m/esm.pt",
        "dnabert": "/m/bert",
        "classifier": "/m/c.pth",
        "chunk_length": 300,
        "dims": 8,  # a fact about the loaded models, not part of the spec
    }
    spec = spec_from_wire(described)
    assert spec == ModelSpec("/m/esm.pt", "/m/bert", "/m/c.pth", 300)
    assert (spec.profile, spec.precision) == (None, DEFAULT_PRECISION)
