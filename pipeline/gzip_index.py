"""Random access into a gzip input through a seek-point index (indexed_gzip).

gzip has no random access: reaching byte N of the decompressed stream means
decompressing the N bytes before it. The planner, which reads every input from start
to end anyway, reads a gzip input in its cutting pass (after its scan validated it)
through `building`, which records a seek point (the compressor's state: 32 KiB of
history) every `spacing_for` decompressed bytes as it goes and saves them at the end
as the input's index (durable.publish: temporary name, fsync, rename), described by
its size and SHA-256 (`GzipIndex`). The job's row keeps the descriptions and each
`assign` carries its unit's.

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

import contextlib
import gzip
import hashlib
import io
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import indexed_gzip
import structlog

from virnuc.pipeline.durable import publish

log = structlog.get_logger()

MIN_SPACING = 4 << 20  # decompressed bytes between seek points, at least
MAX_POINTS = 1024  # about: 32 KiB each, so an index stays near 32 MiB at most
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
        return raw.read(2) == b"\x1f\x8b"


def spacing_for(compressed_size: int) -> int:
    """Seek-point spacing: every 4 MiB, or wider for a large file so that it has about
    MAX_POINTS of them (FASTQ compresses about 4:1)."""
    return max(MIN_SPACING, compressed_size * 4 // MAX_POINTS)


def _open_compressed(path: Path) -> BinaryIO:
    """The compressed file (a seam for tests that count the bytes read from it)."""
    return path.open("rb")


class _OwningReader(indexed_gzip.IndexedGzipFile):
    """An IndexedGzipFile that also closes the compressed file it reads."""

    def __init__(self, compressed: BinaryIO, **options: int) -> None:
        super().__init__(fileobj=compressed, readbuf_size=READ_BUFFER, **options)
        self._compressed = compressed

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._compressed.close()


def _open_indexed(path: Path, spacing: int | None, index: bytes | None) -> BinaryIO:
    """`path` through indexed_gzip: building an index every `spacing` bytes, or seeking
    through `index` (without a `spacing` then: measured with indexed_gzip 1.10, one
    given makes each seek some three times slower)."""
    compressed = _open_compressed(path)
    options = {} if spacing is None else {"spacing": spacing}
    try:
        reader = _OwningReader(compressed, **options)
    except BaseException:
        compressed.close()
        raise
    if index is not None:
        try:
            reader.import_index(fileobj=io.BytesIO(index))
        except BaseException:
            reader.close()
            raise
    return reader


@contextmanager
def building(path: str | os.PathLike[str], index_path: Path) -> Iterator[BinaryIO]:
    """Read a gzip input from the start while indexing it; when the block ends
    normally, having read it to its end, the index is saved at `index_path`; one that
    cannot be is logged (`gzip_index.not_saved`) and left out: the workers then read
    without it. The input must have been validated already (`open_binary`'s checked
    read): indexed_gzip checks no CRC."""
    source = Path(path)
    reader = _open_indexed(source, spacing_for(source.stat().st_size), None)
    with reader:
        yield reader
        try:
            save(reader, index_path)
        except OSError as exc:
            log.warning(
                "gzip_index.not_saved", input=str(path), index=str(index_path), reason=str(exc)
            )
            with contextlib.suppress(OSError):
                index_path.unlink(missing_ok=True)


def save(reader: BinaryIO, index_path: Path) -> None:
    """Write `reader`'s seek points at `index_path`, atomically and durably."""
    exported = io.BytesIO()
    reader.export_index(fileobj=exported)  # type: ignore[attr-defined]
    publish(index_path, exported.getvalue())


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
    """Read `input_path` through `index` from now on, if the index is what was
    recorded; returns whether it is. Without one (an older daemon's `assign`), the
    input is read from the start as before."""
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
        return False
    _registry.put(key, index, data)
    return True


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
        return _open_indexed(path, None, known[1])
    except (indexed_gzip.ZranError, ValueError) as exc:
        _registry.forget(key)
        log.warning("gzip_index.unusable", input=str(path), index=known[0].path, reason=str(exc))
        return gzip.open(path, "rb")  # type: ignore[return-value]
