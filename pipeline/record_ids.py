"""Record ids must be unique across a job's inputs: VirNucPro silently mixes up
duplicates, and our outputs key every row by id.

A scan keeps only an 8-byte hash of each id (`hash_spans`: a polynomial over the id's
bytes, mixed, computed for a whole block's ids at once with numpy; `id_hash` is the
same for one id), and not in memory: `IdHashes` holds at most `CHUNK` of them, then
spills them to temporary files, one per bucket of the hash's top bits.
`check_unique_ids` then sorts one bucket at a time, of every file together, so memory
stays bounded (about `CHUNK` + a 1/`BUCKETS` share of the hashes: some 40 MB at 10⁸
records, where an array of them all would be 0.8 GB and its sorted copy as much
again). Only when two hashes are equal does it re-read the headers, of the suspects
alone, to name the duplicated id, its files and lines (or to find a mere hash
collision): exact, never a false "duplicate". The hash is not secret: an input crafted
to collide only makes its own job re-read its headers.
"""

from __future__ import annotations

import array
import itertools
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path as FsPath
from typing import Protocol

import numpy as np

from .input_error import FastaError

Path = str | os.PathLike[str]


class _Start(Protocol):
    """What is read here of a `fasta.RecordStart` (not imported: fasta imports us)."""

    @property
    def id(self) -> str: ...

    @property
    def line(self) -> int: ...


#: Where each record of a file starts: `fasta.record_starts`, or `inputs.record_starts`
#: for FASTA and FASTQ alike.
StartsOf = Callable[[Path], Iterable[_Start]]


_MASK = (1 << 64) - 1
_MULTIPLIER = 0x9E3779B97F4A7C15  # odd, so every power of it is too
_WIDE = 64  # ids up to this many bytes are hashed as rows of one matrix
_CELLS = 1 << 18  # matrix cells per step: a block of tiny records stays small
_POWERS = np.array([pow(_MULTIPLIER, i, 1 << 64) for i in range(_WIDE)], np.uint64)  # M^i
_STEP = pow(_MULTIPLIER, _WIDE, 1 << 64)  # M^64: from one 64-byte piece to the next


def id_hash(rid: str) -> int:
    """The 64-bit hash of one record id (ids are ASCII: the scan checks it)."""
    return int(hash_ids([rid.encode("ascii")])[0])


def hash_ids(ids: Sequence[bytes]) -> np.ndarray:
    """`hash_spans` of each id (int64)."""
    lengths = np.fromiter(map(len, ids), np.int64, len(ids))
    starts = np.zeros(len(ids), np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return hash_spans(np.frombuffer(b"".join(ids), np.uint8), starts, starts + lengths)


def hash_spans(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The hash of each id `data[start:end]` (uint8 data; int64 out): the sum of its
    bytes b_i times M^i modulo 2^64, its length mixed in, then splitmix64's finalizer,
    so the top bits (the spill's buckets) are as random as the rest."""
    lengths = (ends - starts).astype(np.int64)
    sums = np.zeros(len(starts), np.uint64)
    short = np.flatnonzero(lengths <= _WIDE)
    rows = max(1, _CELLS // _WIDE)
    for at in range(0, len(short), rows):
        chosen = short[at : at + rows]
        sums[chosen] = _short_sums(data, starts[chosen], lengths[chosen])
    for i in np.flatnonzero(lengths > _WIDE).tolist():
        sums[i] = _long_sum(data[starts[i] : ends[i]])
    return _mixed(sums ^ (lengths.astype(np.uint64) * np.uint64(_MULTIPLIER))).view(np.int64)


def _short_sums(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Σ b_i M^i of ids of at most _WIDE bytes, one matrix row each (zero-padded)."""
    width = int(lengths.max(initial=0))
    columns = np.arange(width)
    cells = np.minimum(starts[:, None] + columns, max(len(data) - 1, 0))
    values = data[cells].astype(np.uint64) if len(data) else np.zeros(cells.shape, np.uint64)
    values[columns >= lengths[:, None]] = 0
    return (values * _POWERS[:width]).sum(axis=1, dtype=np.uint64)


def _long_sum(id_bytes: np.ndarray) -> int:
    """Σ b_i M^i of a longer id, _WIDE bytes at a time."""
    total, scale = 0, 1
    for at in range(0, len(id_bytes), _WIDE):
        piece = id_bytes[at : at + _WIDE].astype(np.uint64)
        total = (total + int((piece * _POWERS[: len(piece)]).sum(dtype=np.uint64)) * scale) & _MASK
        scale = (scale * _STEP) & _MASK
    return total


def _mixed(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (uint64, wrapping)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


CHUNK = 1 << 19  # hashes kept in memory before a spill (4 MiB; a spill needs ~9 MiB)
_IDS_AT_ONCE = 4096  # `add_id`'s ids hashed together
BUCKETS = 256  # spill files, by the hash's top 8 bits: a bucket is sorted in memory


class IdHashes:
    """The id hashes of one file's records, in bounded memory (see the module doc)."""

    def __init__(self, chunk: int | None = None) -> None:
        self.chunk = chunk or CHUNK  # read now, so a test can lower CHUNK
        self._pending = array.array("q")
        self._ids: list[bytes] = []  # from `add_id`, not hashed yet
        self._spilled = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def append(self, value: int) -> None:
        self._hash_ids()  # in the order they came: a pass's hashes are its ids'
        self._pending.append(value)
        if len(self._pending) >= self.chunk:
            self._spill()

    def add_id(self, rid: str) -> None:
        """Add the hash of one id (the line scanner's): ids wait to be hashed many at
        a time, as numpy is slow for one."""
        self._ids.append(rid.encode("ascii"))
        if len(self._ids) >= _IDS_AT_ONCE:
            self._hash_ids()

    def extend(self, values: np.ndarray) -> None:
        """Append many hashes at once (int64)."""
        self._hash_ids()
        self._pending.frombytes(values.astype(np.int64, copy=False).tobytes())
        if len(self._pending) >= self.chunk:
            self._spill()

    def __len__(self) -> int:
        return self._spilled + len(self._pending) + len(self._ids)

    @property
    def spilled(self) -> bool:
        self._hash_ids()
        return self._dir is not None

    def in_memory(self) -> np.ndarray:
        """The hashes not spilled (all of them unless `spilled`)."""
        self._hash_ids()
        return np.frombuffer(self._pending, dtype=np.int64)

    def spilled_bucket(self, index: int) -> np.ndarray:
        """The spilled hashes whose top 8 bits are `index`, in no order."""
        if self._dir is None:
            return np.empty(0, np.int64)
        path = FsPath(self._dir.name, f"{index:03d}")
        return np.fromfile(path, dtype=np.int64) if path.exists() else np.empty(0, np.int64)

    def spill_rest(self) -> None:
        """Spill what is still in memory, so each hash is in its bucket's file."""
        self._hash_ids()
        if len(self._pending):
            self._spill()

    def close(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _hash_ids(self) -> None:
        if self._ids:
            ids, self._ids = self._ids, []
            self.extend(hash_ids(ids))

    def _spill(self) -> None:
        """Append the pending hashes to their buckets' files (a stable sort by bucket:
        some 17 bytes per pending hash while it runs)."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="virnuc-ids-")
        hashes = np.frombuffer(self._pending, dtype=np.int64)
        buckets = _bucket_of(hashes)
        grouped = hashes[np.argsort(buckets, kind="stable")]
        edges = np.concatenate(([0], np.cumsum(np.bincount(buckets, minlength=BUCKETS))))
        for index in range(BUCKETS):
            part = grouped[edges[index] : edges[index + 1]]
            if len(part):
                with open(FsPath(self._dir.name, f"{index:03d}"), "ab") as handle:
                    part.tofile(handle)
        self._spilled += len(hashes)
        self._pending = array.array("q")


def _bucket_of(hashes: np.ndarray) -> np.ndarray:
    """Each hash's bucket: its top 8 bits."""
    return (hashes.view(np.uint64) >> np.uint64(56)).astype(np.uint8)


def check_unique_ids(files: Sequence[tuple[Path, IdHashes]], starts_of: StartsOf) -> None:
    """Raise `FastaError` at the first repeated id (in input order), naming where it
    first occurred; `files` holds each input with the id hashes of its records."""
    try:
        suspects = _colliding_hashes([hashes for _, hashes in files])
    finally:
        for _, hashes in files:
            hashes.close()
    if not suspects:
        return
    first_seen: dict[str, tuple[int, int]] = {}  # id -> (file index, line) of its first record
    repeats: list[tuple[str, int, int]] = []  # (id, file index, line) of each repeat, in order
    for index, (path, _) in enumerate(files):
        for start in _suspected(starts_of(path), suspects):
            if start.id in first_seen:
                repeats.append((start.id, index, start.line))
            else:
                first_seen[start.id] = (index, start.line)
    if repeats:
        raise _duplicate_error(files, first_seen, repeats)
    # else: only a hash collision


def _suspected(starts: Iterable[_Start], suspects: set[int]) -> Iterator[_Start]:
    """The records whose id hashes to one of `suspects`, hashed many at a time."""
    batch: list[_Start] = []
    for start in itertools.chain(starts, [None]):
        if start is not None:
            batch.append(start)
            if len(batch) < _IDS_AT_ONCE:
                continue
        hashes = hash_ids([s.id.encode("ascii") for s in batch]).tolist() if batch else []
        yield from (s for s, h in zip(batch, hashes, strict=True) if h in suspects)
        batch = []


def _colliding_hashes(per_file: list[IdHashes]) -> set[int]:
    """The hashes that occur more than once across the files, one bucket at a time."""
    found: set[int] = set()
    for hashes in _sorted_buckets(per_file):
        found.update(hashes[1:][hashes[1:] == hashes[:-1]].tolist())
    return found


def _sorted_buckets(per_file: list[IdHashes]) -> Iterator[np.ndarray]:
    """Every hash, sorted, in pieces no two of which share a value: all at once while
    nothing was spilled, else one bucket (of every file) at a time."""
    if not any(hashes.spilled for hashes in per_file):
        yield np.sort(np.concatenate([np.empty(0, np.int64)] + [h.in_memory() for h in per_file]))
        return
    for hashes in per_file:
        hashes.spill_rest()
    for index in range(BUCKETS):
        yield np.sort(np.concatenate([hashes.spilled_bucket(index) for hashes in per_file]))


def _duplicate_error(
    files: Sequence[tuple[Path, IdHashes]],
    first_seen: dict[str, tuple[int, int]],
    repeats: list[tuple[str, int, int]],
) -> FastaError:
    rid, index, line = repeats[0]
    first_index, first_line = first_seen[rid]
    if first_index == index:
        first = f"first on line {first_line}"
    else:
        first = f"first in {files[first_index][0]}, line {first_line}"
    duplicated = list(dict.fromkeys(r for r, _, _ in repeats))
    shown = ", ".join(duplicated[:10]) + (" …" if len(duplicated) > 10 else "")
    scope = " in the job's inputs" if len(files) > 1 else ""
    return FastaError(
        files[index][0],
        f"duplicate record id {rid!r} ({first}); {len(duplicated)} id(s) occur more "
        f"than once{scope}: {shown}. Record ids (the header's first word) must be "
        "unique: rename or remove the duplicates",
        line=line,
    )
