"""Random access into a gzip input through a seek-point index (indexed_gzip).

gzip has no random access: reaching byte N of the decompressed stream means
decompressing the N bytes before it. The planner reads every gzip input from start to
end anyway; meanwhile pipeline/gzip_pass.py records a seek point (the decompressor's
state: 32 KiB of history) every few MiB and saves them at the end as the input's index,
in indexed_gzip's format, described by its size and SHA-256 (`GzipIndex`). The job's
row keeps the descriptions and each `assign` carries its unit's.

A worker calls `use` with the description before reading: the index's bytes are read
once and kept, if their size and digest are those recorded; then every `open_binary`
of that input (unit start, resume point, digest range) seeks from the nearest seek
point, so a unit's read time does not depend on where it lies. A missing or damaged
index is never trusted: it is logged (`gzip_index.unusable`, with the reason) and the
input is read as without one, decompressing from the start through the standard
library's gzip, as before indexes. The unit's own digest still checks every byte
read, so correctness never depends on the index.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import indexed_gzip
import structlog

from .gzip_pass import GZIP_MAGIC, build_index

log = structlog.get_logger()

READ_BUFFER = 1 << 18  # compressed bytes read at a time: a seek reads at least this
KEPT = 4  # indexes a process keeps in memory (a worker reads one input at a time)


@dataclass(frozen=True, slots=True)
class GzipIndex:
    """A saved index of one gzip input: where it is and what it must be."""

    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> GzipIndex:
        return cls(str(data["path"]), int(str(data["size"])), str(data["sha256"]))


def dumps(indexes: list[GzipIndex | None]) -> str:
    """A job's indexes, one per input (None: a plain input), as stored in its row."""
    return json.dumps([None if i is None else i.to_json() for i in indexes])


def loads(text: str | None) -> tuple[GzipIndex | None, ...]:
    if not text:
        return ()
    return tuple(None if i is None else GzipIndex.from_json(i) for i in json.loads(text))


def is_gzip(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts as gzip does."""
    with open(path, "rb") as raw:
        return raw.read(2) == GZIP_MAGIC


def _open_compressed(path: Path) -> BinaryIO:
    """The compressed file (a seam for tests that count the bytes read from it)."""
    return path.open("rb")


class _OwningReader(indexed_gzip.IndexedGzipFile):
    """An IndexedGzipFile that also closes the compressed file it reads."""

    def __init__(self, compressed: BinaryIO) -> None:
        super().__init__(fileobj=compressed, readbuf_size=READ_BUFFER)
        self._compressed = compressed

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._compressed.close()


def _open_indexed(path: Path, index: bytes) -> BinaryIO:
    """`path` through indexed_gzip, seeking through the seek points in `index`."""
    compressed = _open_compressed(path)
    try:
        reader = _OwningReader(compressed)
    except BaseException:
        compressed.close()
        raise
    try:
        reader.import_index(fileobj=io.BytesIO(index))
    except BaseException:
        reader.close()
        raise
    return reader


def describe(index_path: Path) -> GzipIndex | None:
    """The saved index's description, as recorded for the workers (None: not saved)."""
    try:
        data = index_path.read_bytes()
    except FileNotFoundError:
        return None
    return GzipIndex(str(index_path), len(data), hashlib.sha256(data).hexdigest())


class _Registry:
    """The indexes this process verified, by input path (most recent last)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, tuple[GzipIndex, bytes]] = OrderedDict()

    def put(self, input_path: str, index: GzipIndex, data: bytes) -> None:
        with self._lock:
            self._kept[input_path] = (index, data)
            self._kept.move_to_end(input_path)
            while len(self._kept) > KEPT:
                self._kept.popitem(last=False)

    def forget(self, input_path: str) -> None:
        with self._lock:
            self._kept.pop(input_path, None)

    def get(self, input_path: str) -> tuple[GzipIndex, bytes] | None:
        with self._lock:
            return self._kept.get(input_path)


_registry = _Registry()


def use(input_path: str, index: GzipIndex | None, logger: Any = log) -> bool:
    """Read `input_path` through `index` from now on; returns whether an index is in
    use. One that is not what was recorded is never trusted: it is logged and this
    process builds its own, reading the input once (`gzip_index.rebuilt`), rather than
    decompress from the start for each unit. Without one (an older daemon's `assign`),
    the input is read from the start as before."""
    key = os.path.abspath(input_path)
    if index is None:
        _registry.forget(key)
        return False
    known = _registry.get(key)
    if known is not None and known[0] == index:
        return True
    _registry.forget(key)
    problem, data = _verified(index)
    if data is None:
        logger.warning("gzip_index.unusable", input=input_path, index=index.path, reason=problem)
        data = _rebuilt(input_path, logger)
        if data is None:
            return False
    _registry.put(key, index, data)
    return True


def _rebuilt(input_path: str, logger: Any) -> bytes | None:
    """A fresh index of the input, built in memory (None if the input cannot be read:
    the unit's own read then says why)."""
    try:
        data = build_index(input_path)
    except (OSError, ValueError, RuntimeError) as exc:
        logger.warning("gzip_index.not_rebuilt", input=input_path, reason=str(exc))
        return None
    logger.info("gzip_index.rebuilt", input=input_path, size=len(data))
    return data


def _verified(index: GzipIndex) -> tuple[str, bytes | None]:
    """The index's bytes if their size and SHA-256 are the recorded ones, else why not."""
    try:
        data = Path(index.path).read_bytes()
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})", None
    if len(data) != index.size:
        return f"size {len(data)}, recorded {index.size}", None
    if hashlib.sha256(data).hexdigest() != index.sha256:
        return "SHA-256 differs from the recorded one", None
    return "", data


def open_gzip(path: Path) -> BinaryIO:
    """A gzip input's decompressed bytes: through its index where one is in use, else
    through the standard library, which checks each member's CRC and length (indexed_gzip
    does not: a truncated or damaged file must fail the planner's validating scan)."""
    key = os.path.abspath(path)
    known = _registry.get(key)
    if known is None:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    try:
        return _open_indexed(path, known[1])
    except (indexed_gzip.ZranError, ValueError) as exc:
        _registry.forget(key)
        log.warning("gzip_index.unusable", input=str(path), index=known[0].path, reason=str(exc))
        return gzip.open(path, "rb")  # type: ignore[return-value]
