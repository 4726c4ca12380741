"""Checkpoint parts: a unit's finished records, made durable as one `.npz` file.

docs/architecture.md §4: a part is written to a temporary name, fsynced, renamed into place and
its directory fsynced; only then is it acknowledged (with its size and SHA-256) and,
once the daemon records it in SQLite, trusted. Until then it does not exist.

Format (`FORMAT_VERSION`): an uncompressed `np.savez` archive of plain arrays only,
read back with `allow_pickle=False`, so no part can ever run code when loaded:

* `meta` — UTF-8 JSON as a uint8 array: format, job_id, unit_id, first_record,
  record_count, end_offset, frames.
* `record_ids` ('U'), `record_lengths`, `record_chunks`, `record_frames` (int64, one
  per record, in input order; `record_frames` says how many frame rows each owns),
  and `record_n_bases` (int64, each record's N/n letters; absent from parts written
  before it was added, whose records then have no `mostly_N` warning).
* `frame_ids` ('U'), `scores` (float32 [frames, 2]), and when embeddings were kept,
  `nucleotide` and `protein` (float32 [frames, dim]).

A record without frames keeps its place (zero rows). The predictor leaves a
zero-frame record's embeddings as None; `PartContents.results()` gives it zero-row
arrays instead when the part holds embeddings — the same rows either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from virnuc.pipeline.durable import fsync_path
from virnuc.pipeline.outputs import RecordResult

FORMAT_VERSION = 1
SUFFIX = ".npz"
TEMP_SUFFIX = ".tmp"
_HASH_BLOCK = 1 << 20
_INT_ARRAYS = ("record_lengths", "record_chunks", "record_frames")
# Each record's N/n count (for the `mostly_N` warning); optional: parts written before
# it was added lack it, and read as "not known".
N_BASES = "record_n_bases"
_EMBEDDINGS = ("nucleotide", "protein")
_META_FIELDS = ("job_id", "unit_id", "first_record", "record_count", "end_offset", "frames")

#: Called with a fault point name ("before_rename", "after_rename") so tests can kill
#: the writer at exactly that moment; see `virnuc.faults`.
FaultHook = Callable[[str], None]


class PartCorrupt(Exception):
    """Raised by `read_part` when a part file cannot be trusted: `reason` says why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PartFile:
    """A durable part, as the worker acknowledges it."""

    path: Path
    size: int
    sha256: str
    frames: int
    record_count: int


@dataclass(frozen=True, slots=True)
class PartContents:
    """A part read back and checked; `results()` rebuilds its `RecordResult`s."""

    job_id: str
    unit_id: int
    first_record: int
    record_count: int
    end_offset: int
    frames: int
    arrays: dict[str, np.ndarray]

    def results(self) -> Iterator[RecordResult]:
        """The records in input order, exactly as written (see module notes on None)."""
        a = self.arrays
        rows = [a["scores"], *(a[name] for name in _EMBEDDINGS if name in a)]
        embedded = len(rows) == 1 + len(_EMBEDDINGS)
        # Whole columns as Python lists at once, and one set of zero-row slices shared
        # by the records without frames: per record, numpy scalars and slices cost
        # more than everything else such a record needs.
        frame_ids = a["frame_ids"].tolist()
        no_rows = [array[:0] for array in rows]
        columns = zip(
            a["record_ids"].tolist(),
            a["record_lengths"].tolist(),
            a["record_chunks"].tolist(),
            a["record_frames"].tolist(),
            a[N_BASES].tolist() if N_BASES in a else repeat(None),
            strict=False,  # repeat() is endless; the others are checked equal on reading
        )
        start = 0
        for rid, length, chunks, frames, n_count in columns:
            end = start + frames
            own = [array[start:end] for array in rows] if frames else no_rows
            yield RecordResult(
                record_id=rid,
                length=length,
                chunks=chunks,
                frame_ids=frame_ids[start:end],
                scores=own[0],
                nucleotide=own[1] if embedded else None,
                protein=own[2] if embedded else None,
                n_bases=n_count,
            )
            start = end


def part_path(parts_dir: Path, unit_id: int, first_record: int) -> Path:
    """Deterministic name: a recomputed part replaces an unrecorded one atomically."""
    return Path(parts_dir) / f"{unit_prefix(unit_id)}r{first_record:010d}{SUFFIX}"


def unit_prefix(unit_id: int) -> str:
    """How the names of a unit's parts (and of their temporary files, after the dot) begin."""
    return f"u{unit_id:06d}-"


def temp_path(final: Path) -> Path:
    """Hidden, pid-tagged sibling of `final`: never mistaken for a finished part."""
    return final.with_name(f".{final.name}.{os.getpid()}{TEMP_SUFFIX}")


def write_part(
    parts_dir: Path,
    *,
    job_id: str,
    unit_id: int,
    first_record: int,
    end_offset: int,
    results: list[RecordResult],
    embedding_dims: tuple[int, int] | None = None,
    fault: FaultHook | None = None,
) -> PartFile:
    """Write `results` as a durable part and return what its ack must carry.

    `embedding_dims` (nucleotide, protein) makes the part hold embedding arrays of
    those widths even when none of its records has a frame, so every part of a job
    that saves embeddings says so; without it they are stored if the results have
    them. The bytes are fsynced under a temporary name, renamed, and the directory
    fsynced before the size and SHA-256 are taken by reading the file back, so the
    hash describes what is on disk, not what we meant to write.
    """
    if not results:
        raise ValueError("a part holds at least one record")
    arrays = _to_arrays(job_id, unit_id, first_record, end_offset, results, embedding_dims)
    final = part_path(Path(parts_dir), unit_id, first_record)
    # Only the parts dir itself: if its job dir is gone, the job ended (killed) and a
    # late part must fail rather than resurrect the directory the daemon removed.
    final.parent.mkdir(exist_ok=True)
    _write_durably(final, arrays, fault)
    frames = len(arrays["frame_ids"])
    return PartFile(final, final.stat().st_size, file_sha256(final), frames, len(results))


def _write_durably(final: Path, arrays: dict[str, np.ndarray], fault: FaultHook | None) -> None:
    tmp = temp_path(final)
    try:
        with tmp.open("wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        if fault is not None:
            fault("before_rename")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(final.parent)  # the rename is durable only once its directory is
    if fault is not None:
        fault("after_rename")


def _to_arrays(
    job_id: str,
    unit_id: int,
    first_record: int,
    end_offset: int,
    results: list[RecordResult],
    embedding_dims: tuple[int, int] | None,
) -> dict[str, np.ndarray]:
    frame_ids = [fid for r in results for fid in r.frame_ids]
    arrays = {
        "record_ids": _strings([r.record_id for r in results]),
        "record_lengths": np.array([r.length for r in results], dtype=np.int64),
        "record_chunks": np.array([r.chunks for r in results], dtype=np.int64),
        "record_frames": np.array([len(r.frame_ids) for r in results], dtype=np.int64),
        **_n_bases_array(results),
        "frame_ids": _strings(frame_ids),
        "scores": _rows([r.scores for r in results], 2, "scores"),
    }
    arrays.update(_embedding_arrays(results, embedding_dims))
    meta = {
        "format": FORMAT_VERSION,
        "job_id": job_id,
        "unit_id": unit_id,
        "first_record": first_record,
        "record_count": len(results),
        "end_offset": end_offset,
        "frames": len(frame_ids),
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    _check_consistent(arrays, meta)  # refuse to write what read_part would refuse
    return arrays


def _n_bases_array(results: list[RecordResult]) -> dict[str, np.ndarray]:
    """`record_n_bases` when every result knows its N count (a worker's always do)."""
    counts = [r.n_bases for r in results]
    if any(count is None for count in counts):
        return {}
    return {N_BASES: np.array(counts, dtype=np.int64)}


def _strings(values: list[str]) -> np.ndarray:
    """A fixed-width unicode array ('U'), never an object array (that would need pickle)."""
    return np.array(values, dtype=np.str_) if values else np.zeros(0, dtype="U1")


def _rows(pieces: list[np.ndarray | None], width: int | None, name: str) -> np.ndarray:
    """Concatenate per-record [n, width] float32 blocks; zero-row blocks are fine."""
    present = [np.asarray(p, dtype=np.float32) for p in pieces if p is not None and len(p)]
    if not present:
        return np.zeros((0, width or 0), dtype=np.float32)
    out = np.concatenate(present)
    if out.ndim != 2 or (width is not None and out.shape[1] != width):
        raise ValueError(f"{name} must be [frames, {width or 'dim'}], got {out.shape}")
    return out


def _embedding_arrays(
    results: list[RecordResult], dims: tuple[int, int] | None
) -> dict[str, np.ndarray]:
    """Both embedding arrays, or none: a record with frames but no embeddings is a bug."""
    kept = [r for r in results if r.nucleotide is not None and r.protein is not None]
    if not kept and dims is None:
        return {}
    kept_ids = {id(r) for r in kept}
    missing = [r.record_id for r in results if r.frame_ids and id(r) not in kept_ids]
    if missing:
        raise ValueError(f"embeddings were not kept for record(s) {', '.join(missing[:5])}")
    nucleotide_dim, protein_dim = dims or (None, None)
    return {
        "nucleotide": _rows([r.nucleotide for r in results], nucleotide_dim, "nucleotide"),
        "protein": _rows([r.protein for r in results], protein_dim, "protein"),
    }


def file_sha256(path: Path) -> str:
    """SHA-256 of a file in lowercase hex, read in 1 MiB blocks (parts can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


# --- reading ---------------------------------------------------------------------------


def read_part(path: Path, *, size: int | None = None, sha256: str | None = None) -> PartContents:
    """Load a part without pickle and check it; raise `PartCorrupt` on any doubt.

    `size`/`sha256` (from the recorded ack) are checked first, so a part that was
    replaced or damaged after it was acknowledged is refused before it is parsed.
    """
    path = Path(path)
    _verify_identity(path, size, sha256)
    arrays = _load_arrays(path)
    meta = _parse_meta(path, arrays)
    try:
        _check_consistent(arrays, meta)
    except ValueError as exc:
        raise PartCorrupt(path, str(exc)) from None
    return PartContents(**{k: meta[k] for k in _META_FIELDS}, arrays=arrays)


def _verify_identity(path: Path, size: int | None, sha256: str | None) -> None:
    if size is None and sha256 is None:
        return
    try:
        actual_size = path.stat().st_size
        if size is not None and actual_size != size:
            raise PartCorrupt(path, f"size is {actual_size} bytes, expected {size}")
        if sha256 is not None and (actual := file_sha256(path)) != sha256:
            raise PartCorrupt(path, f"SHA-256 is {actual}, expected {sha256}")
    except OSError as exc:
        raise PartCorrupt(path, f"cannot read: {exc}") from exc


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the archive, in memory; object arrays are refused by numpy.

    The file is opened here, not by `np.load`, which leaks its handle when the zip
    cannot be opened.
    """
    try:
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise PartCorrupt(path, f"unreadable part ({type(exc).__name__}: {exc})") from exc
    odd = [name for name, value in arrays.items() if not isinstance(value, np.ndarray)]
    if odd:  # a member that is not .npy data comes back as raw bytes
        raise PartCorrupt(path, f"not an array: {', '.join(odd)}")
    return arrays


def _parse_meta(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    raw = arrays.get("meta")
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise PartCorrupt(path, "no meta array")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PartCorrupt(path, f"meta is not JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise PartCorrupt(path, f"unknown part format {_short(meta)}")
    bad = [k for k in _META_FIELDS if not _meta_value_ok(k, meta.get(k))]
    if bad:
        raise PartCorrupt(path, f"meta field(s) missing or invalid: {', '.join(bad)}")
    return meta


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _meta_value_ok(key: str, value: object) -> bool:
    if key == "job_id":
        return isinstance(value, str) and bool(value)
    return type(value) is int and value >= 0


def _check_consistent(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Every count must add up; raises ValueError naming the first that does not."""
    _expect_kind(arrays, "record_ids", "U", 1)
    _expect_kind(arrays, "frame_ids", "U", 1)
    records = len(arrays["record_ids"])
    optional = (N_BASES,) if N_BASES in arrays else ()
    for name in (*_INT_ARRAYS, *optional):
        _expect_kind(arrays, name, "i", 1)
        if len(arrays[name]) != records:
            raise ValueError(f"{name} has {len(arrays[name])} entries for {records} records")
    frames = len(arrays["frame_ids"])
    per_record = arrays["record_frames"]
    if (per_record < 0).any() or int(per_record.sum()) != frames:
        raise ValueError(f"record_frames add up to {int(per_record.sum())}, not {frames} frames")
    _expect_float_rows(arrays, "scores", frames, 2)
    _check_embeddings(arrays, frames)
    if (meta["record_count"], meta["frames"]) != (records, frames):
        raise ValueError(
            f"meta says {meta['record_count']} records and {meta['frames']} frames, "
            f"the arrays hold {records} and {frames}"
        )


def _check_embeddings(arrays: dict[str, np.ndarray], frames: int) -> None:
    present = [name for name in _EMBEDDINGS if name in arrays]
    if present and len(present) != len(_EMBEDDINGS):
        raise ValueError(f"only {present[0]} embeddings are present")
    for name in present:
        _expect_float_rows(arrays, name, frames, None)


def _expect_kind(arrays: dict[str, np.ndarray], name: str, kind: str, ndim: int) -> None:
    array = arrays.get(name)
    if array is None:
        raise ValueError(f"array {name} is missing")
    if array.dtype.kind != kind or array.ndim != ndim:
        raise ValueError(f"array {name} is {array.dtype}[{array.ndim}-d], expected kind {kind!r}")


def _expect_float_rows(
    arrays: dict[str, np.ndarray], name: str, rows: int, width: int | None
) -> None:
    array = arrays.get(name)
    if array is None:
        raise ValueError(f"array {name} is missing")
    if array.dtype != np.float32 or array.ndim != 2 or array.shape[0] != rows:
        raise ValueError(f"{name} is {array.dtype}{list(array.shape)}, expected float32[{rows}, …]")
    if width is not None and array.shape[1] != width:
        raise ValueError(f"{name} has {array.shape[1]} columns, expected {width}")
