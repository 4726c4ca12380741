"""`run_info.json`: what ran, where, how and with which model files, beside the outputs.

One function builds it for both paths (virnucd's report step, the in-process
`predict_file`), so both record the same keys:

* `virnuc_version`, `created_utc` (ISO 8601), `host`, `devices`, `precision`,
  `chunk_length`, `profile` (`"demo"` or null), `demo_models` (true: tiny random
  models, the predictions mean nothing);
* `inputs` (list), `output`, `options` (the submit's other arguments), `seconds`
  (submit to done, or the in-process run's own time; null when unknown);
* `models`: one entry per role (`esm`, `dnabert`, `classifier`), each with `given` (as
  the submit named it; for demo models, the profile, never the cache path, which for
  `virnucctl predict` is a temporary dir deleted afterwards) and `files`: each local
  file's `path` (a demo file's relative to the demo models' directory), `size` and
  `sha256`, or `missing: true` when it could not be read. A model named, not given as
  a path (an ESM name, a hub id), has no local file here: `files` is empty.

Hashes are streamed 1 MiB at a time: a 3B ESM checkpoint is hashed in bounded memory.
Nothing here imports torch. Written atomically (`durable.publish`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .durable import publish
from .output_format import RUN_INFO
from .spec import DEMO_VERSION, ModelSpec

MODEL_ROLES = ("esm", "dnabert", "classifier")
_BLOCK = 1 << 20


def file_digest(path: Path) -> dict[str, Any]:
    """A model file's size and SHA-256, or `missing` when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
            size = handle.tell()
    except OSError:
        return {"missing": True}
    return {"size": size, "sha256": digest.hexdigest()}


def model_files(reference: str, shown_from: Path | None = None) -> list[dict[str, Any]]:
    """Each regular file that `reference` names (a file, or a directory's files, sorted),
    its path shown relative to `shown_from` when given; [] for a name that is no path."""
    path = Path(reference)
    if path.is_dir():
        try:
            files = sorted(p for p in path.rglob("*") if p.is_file())
        except OSError:  # a subdirectory it may not list: say so, never fail the report
            return [{"path": _shown_path(path, shown_from), "missing": True}]
    elif path.is_file():
        files = [path]
    elif path.is_absolute():
        return [{"path": _shown_path(path, shown_from), "missing": True}]
    else:
        return []  # a model name or hub id: loaded from the library's own cache
    return [{"path": _shown_path(p, shown_from), **file_digest(p)} for p in files]


def _shown_path(path: Path, shown_from: Path | None) -> str:
    if shown_from is not None and path.is_relative_to(shown_from):
        return str(Path(shown_from.name) / path.relative_to(shown_from))
    return str(path)


def describe_models(spec: ModelSpec) -> dict[str, dict[str, Any]]:
    demo_root = Path(spec.classifier).parent if spec.profile == "demo" else None
    models = {}
    for role in MODEL_ROLES:
        reference = str(getattr(spec, role))
        given = f"demo profile ({DEMO_VERSION}, tiny random models)" if demo_root else reference
        models[role] = {"given": given, "files": model_files(reference, demo_root)}
    return models


def build_run_info(
    spec: ModelSpec | dict[str, Any],
    *,
    inputs: list[str],
    output: str,
    devices: list[str],
    options: dict[str, Any],
    seconds: float | None = None,
) -> dict[str, Any]:
    """The contents of `run_info.json` (see the module's docstring). `spec` may be a
    `ModelSpec.as_dict()`: virnucd's report child gets it as JSON."""
    from virnuc import __version__

    if isinstance(spec, dict):
        spec = ModelSpec(**spec)
    return {
        "virnuc_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "devices": list(devices),
        "precision": spec.precision,
        "chunk_length": spec.chunk_length,
        "profile": spec.profile,
        "demo_models": spec.profile == "demo",
        "inputs": list(inputs),
        "output": output,
        "options": dict(options),
        "seconds": None if seconds is None else round(seconds, 3),
        "models": describe_models(spec),
    }


def write_run_info(out_dir: str | os.PathLike[str], info: dict[str, Any]) -> Path:
    """Publish `info` as `run_info.json` in `out_dir`; returns its path."""
    path = Path(out_dir) / RUN_INFO
    publish(path, (json.dumps(info, indent=2, sort_keys=False) + "\n").encode("utf-8"))
    return path
