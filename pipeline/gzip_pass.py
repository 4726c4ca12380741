"""A gzip input read once, start to end, checked and indexed on the way: planning's read.

indexed_gzip (zran) decompresses it and records a seek point (the decompressor's
state: 32 KiB of history) every `spacing_for` decompressed bytes as it goes; `finish`
saves them, in indexed_gzip's format, for the workers (pipeline/gzip_index.py). Its
memory is the points kept (about 1,024 at most) and its buffers, whatever the size of
the file. (rapidgzip decompresses faster, but holds every chunk's window until its
index is exported: some 1.2 GB for a 10⁸-read lane; measured with 0.16.1.) It runs
on the planning pass's reading thread, beside the scan.

indexed_gzip checks no CRC32, and reads a file cut short inside its deflate data as a
shorter file, without an error. So this reader takes the CRC32 and the length of all
it returned and, at the end, compares them with the file's last 8 bytes: the footer
of a single-member file (what gzip and pigz write), which then is complete and intact.
A file whose footer does not match is either made of several members (concatenated
.gz files, BGZF) or damaged, and is decompressed once more through ISA-L, which checks
every member and that the last one ends: a damaged file fails with the line where its
data went wrong (`verify`).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

import indexed_gzip
import structlog
from isal import isal_zlib

from virnuc.pipeline.durable import publish

from .input_error import unreadable_error

log = structlog.get_logger()

GZIP_MAGIC = b"\x1f\x8b"  # how every gzip file starts
MIN_SPACING = 4 << 20  # decompressed bytes between seek points, at least
MAX_POINTS = 1024  # about: 32 KiB each, so an index stays near 32 MiB at most
_READ_BUFFER = 1 << 20  # compressed bytes indexed_gzip reads at a time
_READ = 1 << 22  # decompressed bytes per read of `build_index`
_INFLATE_ERROR = cast(type[Exception], isal_zlib.error)  # isal's stub calls it an instance
_PIECE = 1 << 16  # compressed bytes per step of `verify`


def spacing_for(compressed_size: int) -> int:
    """Seek-point spacing: every 4 MiB (what a seek decompresses at most), or wider for
    a large file so that it has about MAX_POINTS of them (FASTQ compresses some 3:1,
    counted as 4:1 to stay under)."""
    return max(MIN_SPACING, compressed_size * 4 // MAX_POINTS)


def _indexing_reader(path: Path) -> BinaryIO:
    """`path` through indexed_gzip, recording seek points from its start."""
    spacing = spacing_for(path.stat().st_size)
    return indexed_gzip.IndexedGzipFile(
        str(path), spacing=spacing, readbuf_size=_READ_BUFFER, skip_crc_check=True
    )


class CheckedGzipReader:
    """Decompressed bytes of a gzip file, read from the start (see the module doc).

    Use as a context manager; read to the end, then `finish`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._reader = _indexing_reader(self.path)
        self._crc = 0
        self._length = 0

    def __enter__(self) -> CheckedGzipReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._reader.close()

    def read(self, size: int) -> bytes:
        """Up to `size` decompressed bytes (b"" at the end); a member whose CRC32 does
        not match, or deflate data that cannot be decoded, raises `gzip.BadGzipFile`."""
        try:
            data: bytes = self._reader.read(size)
        except indexed_gzip.ZranError as exc:  # data it cannot decode (`verify` says where)
            raise gzip.BadGzipFile(str(exc)) from exc
        self._crc = isal_zlib.crc32(data, self._crc)
        self._length += len(data)
        return data

    def finish(self, index_to: Path | None) -> None:
        """After the last read: make sure the stream is complete and intact (raising
        `FastaError` with the line where it is not), then save the seek points at
        `index_to` (if given), atomically and durably."""
        if not self._footer_matches():
            verify(self.path)
        if index_to is not None:
            self._save_index(index_to)

    def export_index(self) -> bytes:
        """The seek points recorded so far, in indexed_gzip's format."""
        exported = io.BytesIO()
        self._reader.export_index(fileobj=exported)  # type: ignore[attr-defined]
        return exported.getvalue()

    def _save_index(self, index_to: Path) -> None:
        """Save the seek points; an index that cannot be saved is logged
        (`gzip_index.not_saved`) and left out: the workers then read without it."""
        try:
            publish(index_to, self.export_index())
        except OSError as exc:
            log.warning(
                "gzip_index.not_saved", input=str(self.path), index=str(index_to), reason=str(exc)
            )
            with contextlib.suppress(OSError):
                index_to.unlink(missing_ok=True)

    def _footer_matches(self) -> bool:
        with self.path.open("rb") as raw:
            raw.seek(0, os.SEEK_END)
            if raw.tell() < 18:  # a gzip header and footer at least
                return False
            raw.seek(-8, os.SEEK_END)
            crc, length = struct.unpack("<II", raw.read(8))
        return crc == self._crc and length == self._length & 0xFFFFFFFF


def build_index(path: str | os.PathLike[str]) -> bytes:
    """The seek points of a gzip file, in indexed_gzip's format, from one read of it
    (nothing checked: for a worker whose recorded index is unusable)."""
    with CheckedGzipReader(path) as reader:
        while reader.read(_READ):
            pass
        return reader.export_index()


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


def _members_data(raw: BinaryIO) -> Iterator[bytes]:
    """The decompressed data of each gzip member of `raw` in turn. Compressed bytes go
    in small pieces (deflate expands 1032:1 at most), so the data decompressed before a
    damage is counted before it raises."""
    inflater, inside = isal_zlib.decompressobj(wbits=31), False
    while piece := raw.read(_PIECE):
        while piece:
            inside = True
            yield inflater.decompress(piece)
            piece = b""
            if inflater.eof:  # the next member, if any, starts in its unused data
                piece = inflater.unused_data
                inflater, inside = isal_zlib.decompressobj(wbits=31), False
    if inside:
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")
