"""A gzip input read once, start to end, checked and indexed on the way: planning's read.

Two decompressors run side by side, each on a thread of its own, one core each:

* ISA-L (`isal`, the fastest single-core inflate for gzip, some 2.5x zlib) produces the
  bytes planning scans, member after member (concatenated .gz files and BGZF
  included), checking each member's CRC32 and length and that the last one ends: a
  damaged file fails (`verify` then names the line where its data went wrong).
* indexed_gzip (zran) records a seek point (the decompressor's state: 32 KiB of
  history) every `spacing_for` decompressed bytes; `finish` saves them, in its format,
  for the workers (pipeline/gzip_index.py). It must inflate with zlib, stopping at
  deflate block boundaries, which ISA-L cannot; so it inflates the file a second time,
  on the other core, discarding the data, in large steps (`seek`, which releases the
  GIL). Reading its data through `read` instead would cost more: each read restarts
  from the last seek point (its issues #74, #89), twice the work at our block size.

So the pass takes a second core's zlib inflate to finish in about the time of the
scan; its memory is the points kept and zran's buffers (`spacing_for`). (rapidgzip
decompresses faster, but holds every chunk's window until its index is exported: some
1.2 GB for a 10⁸-read lane; measured with 0.16.1.)
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import threading
from collections.abc import Generator
from pathlib import Path
from typing import BinaryIO, cast

import indexed_gzip
import structlog
from isal import isal_zlib

from virnuc.pipeline.durable import publish

from .input_error import unreadable_error

log = structlog.get_logger()

GZIP_MAGIC = b"\x1f\x8b"  # how every gzip file starts
MIN_SPACING = 4 << 20  # decompressed bytes between seek points: what a seek inflates at most
MAX_SPACING = 16 << 20
MAX_POINTS = 1024  # up to MAX_SPACING; 32 KiB each
_READ_BUFFER = 1 << 20  # compressed bytes indexed_gzip reads at a time
_SEEK_STEP = 16  # seek points the indexer records between two looks at its stop flag
_INFLATE_ERROR = cast(type[Exception], isal_zlib.error)  # isal's stub calls it an instance
_PIECE = 1 << 16  # compressed bytes per step of `verify`
# The scanned read: larger steps, as each hands the GIL over (a Python thread holding it
# makes the other wait), bounded in output instead.
_SCAN_PIECE = 1 << 20


def spacing_for(compressed_size: int) -> int:
    """Seek-point spacing: about MAX_POINTS of them (FASTQ compresses some 3:1, counted
    as 4:1 to stay under), but every 4 to 16 MiB. zran keeps the points (32 KiB each)
    and four spacings of buffer in memory, where it builds the index and where it
    seeks: some 64 + 64 MiB for a 10⁸-read lane, the least their sum can be there."""
    return min(max(MIN_SPACING, compressed_size * 4 // MAX_POINTS), MAX_SPACING)


class GzipPass:
    """Decompressed bytes of a gzip file, read from the start and checked, while its
    seek points are recorded (see the module doc).

    Use as a context manager; read to the end, then `finish`.
    """

    def __init__(self, path: str | os.PathLike[str], read_size: int) -> None:
        self.path = Path(path)
        self._raw = self.path.open("rb")
        self._data = _members_data(self._raw, _SCAN_PIECE, read_size)
        self._read_size = read_size
        self._indexer = SeekPointRecorder(self.path)

    def __enter__(self) -> GzipPass:
        self._indexer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._indexer.close()
        self._data.close()
        self._raw.close()

    def read(self) -> bytes:
        """The next `read_size` decompressed bytes or so (b"" at the end); damaged data
        raises `gzip.BadGzipFile`, a stream that ends early `EOFError`."""
        pieces: list[bytes] = []
        size = 0
        try:
            while size < self._read_size and (piece := next(self._data, None)) is not None:
                pieces.append(piece)
                size += len(piece)
        except _INFLATE_ERROR as exc:
            raise gzip.BadGzipFile(str(exc)) from exc
        return b"".join(pieces)

    def finish(self, index_to: Path | None) -> None:
        """After the last read: save the seek points at `index_to` (if given),
        atomically and durably. An index that cannot be built or saved is logged
        (`gzip_index.not_saved`) and left out: the workers then build their own."""
        if index_to is None:
            return
        try:
            publish(index_to, self._indexer.result())
        except (OSError, indexed_gzip.ZranError) as exc:
            log.warning(
                "gzip_index.not_saved", input=str(self.path), index=str(index_to), reason=str(exc)
            )
            with contextlib.suppress(OSError):
                index_to.unlink(missing_ok=True)


class SeekPointRecorder:
    """indexed_gzip inflating a gzip file to its end on a thread, recording seek points;
    `close` stops it within `_SEEK_STEP` points (a failed scan need not wait for the
    rest of the file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._spacing = spacing_for(path.stat().st_size)
        self._file = indexed_gzip.IndexedGzipFile(
            str(path), spacing=self._spacing, readbuf_size=_READ_BUFFER, skip_crc_check=True
        )
        self._stop = threading.Event()
        self._error: Exception | None = None
        self.stopped_at = 0  # decompressed bytes covered when it stopped
        self._thread = threading.Thread(target=self._record, name="gzip-index", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def result(self) -> bytes:
        """The seek points of the whole file, in indexed_gzip's format (waits for them)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        exported = io.BytesIO()
        self._file.export_index(fileobj=exported)
        return exported.getvalue()

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
        self.stopped_at = self._file.tell()
        self._file.close()

    def _record(self) -> None:
        target = 0
        try:
            while not self._stop.is_set():
                target += self._spacing * _SEEK_STEP
                self._file.seek(target)  # inflates up to there, without the GIL
                if self._file.tell() < target:  # the end of the file
                    return
        except Exception as exc:  # handed to `result`
            self._error = exc


def build_index(path: str | os.PathLike[str]) -> bytes:
    """The seek points of a gzip file, in indexed_gzip's format, from one read of it
    (nothing checked: for a worker whose recorded index is unusable)."""
    recorder = SeekPointRecorder(Path(path))
    try:
        recorder.start()
        return recorder.result()
    finally:
        recorder.close()


def verify(path: str | os.PathLike[str]) -> None:
    """Decompress `path` through ISA-L, checking each member's CRC32 and length and
    that the last one ends; a damaged stream raises `FastaError` naming the line where
    its data went wrong."""
    lines = 0
    try:
        with open(path, "rb") as raw:
            for data in _members_data(raw):
                lines += data.count(b"\n")
    except _INFLATE_ERROR as exc:
        raise unreadable_error(path, gzip.BadGzipFile(str(exc)), lines + 1) from exc
    except (EOFError, OSError) as exc:  # EOFError, BadGzipFile: damage; else the disk
        raise unreadable_error(path, exc, lines + 1) from exc


def _members_data(
    raw: BinaryIO, piece: int = _PIECE, most: int = 0
) -> Generator[bytes, None, None]:
    """The decompressed data of each gzip member of `raw` in turn, `piece` compressed
    bytes at a time, and at most `most` decompressed bytes per step (0: no bound).
    Deflate expands 1032:1 at most, so small pieces or a bound keep a crafted file
    from filling memory; small pieces also count the data before a damage closely."""
    inflater, inside = isal_zlib.decompressobj(wbits=31), False
    compressed = raw.read(piece)
    while compressed or inside:
        inside = True
        data = inflater.decompress(compressed, most)
        if inflater.eof:  # the next member, if any, starts in its unused data
            compressed = inflater.unused_data or raw.read(piece)
            inflater, inside = isal_zlib.decompressobj(wbits=31), False
        else:  # with a bound, output can be held back: ask again, even with no input
            compressed = inflater.unconsumed_tail or raw.read(piece)
            if not compressed and not data:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        if data:
            yield data
