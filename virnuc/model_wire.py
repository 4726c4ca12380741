"""The one conversion between a job's `ModelSpec` and its form on the worker wire.

The daemon holds `virnuc.pipeline.spec.ModelSpec` (in memory and, as JSON, in SQLite);
the worker protocol carries `virnuc.protocol.WireModelSpec` in `assign`, and a plain
map describing the loaded models in `hello` / `models_loaded` (the spec's fields plus
facts such as the embedding sizes). Both processes convert here and nowhere else
(docs/architecture.md §3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from virnuc.pipeline.spec import ModelSpec
from virnuc.protocol import WireModelSpec

SPEC_FIELDS = tuple(field.name for field in fields(ModelSpec))


def spec_to_wire(spec: ModelSpec) -> WireModelSpec:
    """The `assign` form of a spec (a missing profile is left out of the map)."""
    return WireModelSpec(
        esm=spec.esm,
        dnabert=spec.dnabert,
        classifier=spec.classifier,
        chunk_length=spec.chunk_length,  # type: ignore[arg-type]
        profile=spec.profile,
        precision=spec.precision,  # type: ignore[arg-type]
    )


def spec_from_wire(models: WireModelSpec | Mapping[str, Any]) -> ModelSpec:
    """The spec an `assign` names, or the one a `hello`/`models_loaded` map describes."""
    values: Mapping[str, Any] = models.to_wire() if isinstance(models, WireModelSpec) else models
    # A field left out (an older worker's map) keeps the spec's default.
    given: dict[str, Any] = {name: values[name] for name in SPEC_FIELDS if name in values}
    return ModelSpec(**given)
