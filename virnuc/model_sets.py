"""Model sets: named choices of models that virnucd's administrator configures.

In virnucd's config a `[models.NAME]` table names a classifier, ESM-2 and DNABERT-S
models, a chunk length and a precision (or `profile = "demo"`); a submit names a set
(`--models NAME`) instead of the files, and `[models.default]` serves a submit that
names no model at all. A client can only name a set, never define one: sets come from
the config alone, so the paths in them are the admin's (not held to `model_roots`).

This module parses and checks the tables (every problem names its table) and writes
them back as TOML for `virnucctl predict`'s private virnucd. It imports no torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from virnuc.pipeline.spec import CHUNK_LENGTHS, PRECISIONS, PROFILES

#: The set a submit that names no model options gets, when the config has one.
DEFAULT_SET = "default"
#: Set names are used on command lines and in status lines: keep them plain.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ModelSetError(ValueError):
    """Raised for a `[models.NAME]` table that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class ModelSetConfig:
    """One `[models.NAME]` table, checked: either a profile or a classifier (with the
    embedders left to their defaults when not named). `chunk_length` and `precision`
    left out are decided as for a submit that leaves them out."""

    name: str
    profile: str | None = None
    classifier: str | None = None
    esm: str | None = None
    dnabert: str | None = None
    chunk_length: int | None = None
    precision: str | None = None

    def describe(self) -> str:
        """``default (300_model.pth, esm2_t36_3B_UR50D, DNABERT-S)`` for messages."""
        if self.profile is not None:
            return f"{self.name} (profile {self.profile})"
        parts = [self.classifier, self.esm, self.dnabert]
        shown = [Path(p).name for p in parts if p is not None]
        return f"{self.name} ({', '.join(shown)})"


_KEYS = tuple(f.name for f in fields(ModelSetConfig) if f.name != "name")


def parse_model_sets(tables: object) -> dict[str, ModelSetConfig]:
    """The config's `models` value (a table of `[models.NAME]` tables), checked."""
    if not isinstance(tables, Mapping):
        raise ModelSetError('models must be tables: [models.default] classifier = "/path"')
    return {name: parse_model_set(name, table) for name, table in tables.items()}


def parse_model_set(name: str, table: object) -> ModelSetConfig:
    where = f"[models.{name}]"
    if not _NAME.fullmatch(name):
        raise ModelSetError(
            f"{where}: a set's name is letters, digits, '_', '.' and '-' (at most 64)"
        )
    if not isinstance(table, Mapping):
        raise ModelSetError(f"{where} must be a table of keys ({', '.join(_KEYS)})")
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ModelSetError(
            f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(_KEYS)})"
        )
    values: dict[str, Any] = {
        key: _checked_value(where, key, value) for key, value in table.items()
    }
    _check_models_named(where, values)
    return ModelSetConfig(name=name, **values)


def _checked_value(where: str, key: str, value: object) -> str | int:
    if key == "chunk_length":
        if isinstance(value, bool) or value not in CHUNK_LENGTHS:
            raise ModelSetError(f"{where}: chunk_length must be 300 or 500, not {value!r}")
        return int(value)
    if not isinstance(value, str) or not value:
        raise ModelSetError(f"{where}: {key} must be a non-empty string, not {value!r}")
    if key == "precision" and value not in PRECISIONS:
        raise ModelSetError(
            f"{where}: precision must be one of {', '.join(PRECISIONS)}, not {value!r}"
        )
    if key == "profile" and value not in PROFILES:
        raise ModelSetError(f"{where}: unknown profile {value!r} (known: {', '.join(PROFILES)})")
    if key in ("classifier", "esm", "dnabert"):
        return _model_path(where, key, value)
    return value


def _model_path(where: str, key: str, value: str) -> str:
    """`~` expanded; a path must be absolute, since virnucd's working directory (and a
    private virnucd's) is no one's choice. A name or hub id is kept as it is."""
    expanded = str(Path(value).expanduser()) if value.startswith("~") else value
    is_path = key == "classifier" or expanded.startswith(".") or expanded.endswith(".pt")
    if is_path and not Path(expanded).is_absolute():
        raise ModelSetError(f"{where}: {key} must be an absolute path, not {value!r}")
    return expanded


def _check_models_named(where: str, values: Mapping[str, object]) -> None:
    files = [key for key in ("classifier", "esm", "dnabert") if key in values]
    if "profile" in values and files:
        raise ModelSetError(
            f"{where}: profile = {values['profile']!r} brings its own models; "
            f"leave out {', '.join(files)}, or the profile"
        )
    if "profile" not in values and "classifier" not in values:
        raise ModelSetError(
            f'{where} names no classifier: add classifier = "/path/300_model.pth" '
            '(VirNucPro\'s weights), or profile = "demo"'
        )


def model_sets_toml(sets: Mapping[str, ModelSetConfig]) -> str:
    """The `[models.NAME]` tables as TOML, which `parse_model_sets` reads back the
    same (what `virnucctl predict` hands its private virnucd)."""
    lines: list[str] = []
    for name, model_set in sets.items():
        lines.append(f"[models.{_toml_string(name)}]")
        for key in _KEYS:
            value = getattr(model_set, key)
            if isinstance(value, str):
                lines.append(f"{key} = {_toml_string(value)}")
            elif value is not None:
                lines.append(f"{key} = {value}")
        lines.append("")
    return "\n".join(lines)


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, but for DEL (which TOML wants
    escaped) and surrogate pairs (which TOML lacks: non-ASCII is written as it is)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
