"""A gzip input read once, start to end, checked and indexed on the way: planning's read.

rapidgzip decompresses it (ISA-L inside: about twice the standard library's speed
here) and keeps seek points as it goes; `finish` exports them in indexed_gzip's format,
thinned to one every few MiB (`thinned`), for the workers (pipeline/gzip_index.py).

rapidgzip checks the CRC32 of each gzip member whose footer it reaches, but not that
the stream has one: a file cut short inside its deflate data reads as a shorter file,
without an error (rapidgzip issue #71, open in 0.16). So this reader also takes the
CRC32 and the length of all it returned and, at the end, compares them with the file's
last 8 bytes: the footer of a single-member file (what gzip and pigz write), which
then is complete and intact. A file whose footer does not match is either made of
several members (concatenated .gz files, BGZF) or damaged, and is decompressed once
more through ISA-L, which checks every member and that the last one ends: a damaged
file fails with the line where its data went wrong (`verify`).
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

import rapidgzip
import structlog
from isal import isal_zlib

from virnuc.pipeline.durable import publish

from .input_error import unreadable_error

log = structlog.get_logger()

GZIP_MAGIC = b"\x1f\x8b"  # how every gzip file starts
CHUNK = 1 << 20  # compressed bytes rapidgzip decodes at a time: its cache holds some
# 16 decoded chunks (about 70 MB of FASTQ text here, 4 MiB would cost 200 MB)
MIN_SPACING = 4 << 20  # decompressed bytes between the seek points kept, at least
MAX_POINTS = 1024  # about: 32 KiB each, so an index stays near 32 MiB at most
_READ = 1 << 22  # decompressed bytes per read of `build_index`
_INFLATE_ERROR = cast(type[Exception], isal_zlib.error)  # isal's stub calls it an instance
_PIECE = 1 << 16  # compressed bytes per step of `verify`


def spacing_for(decompressed_size: int) -> int:
    """Decompressed bytes between the seek points kept: 4 MiB (what a seek decompresses
    at most), or wider for a large file, so that it keeps about MAX_POINTS of them."""
    return max(MIN_SPACING, decompressed_size // MAX_POINTS)


class CheckedGzipReader:
    """Decompressed bytes of a gzip file, read from the start (see the module doc).

    Use as a context manager (rapidgzip's threads must be joined before the
    interpreter exits); read to the end, then `finish`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._reader = rapidgzip.RapidgzipFile(str(self.path), parallelization=1, chunk_size=CHUNK)
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
        except OSError:
            raise  # the disk, not the data
        except Exception as exc:  # rapidgzip words bad data as ValueError, RuntimeError, ...
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
        """The seek points met so far, in indexed_gzip's format, one every
        `spacing_for` decompressed bytes (rapidgzip keeps one every few hundred KiB)."""
        exported = io.BytesIO()
        self._reader.export_index(exported, rapidgzip.IndexFormat.INDEXED_GZIP)
        return thinned(exported.getvalue(), spacing_for(self._length))

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


# indexed_gzip's index file (zran.c, version 1): a header, then each point's offsets,
# bit offset and whether a window follows, then the windows of those that have one.
_HEADER = struct.Struct("<5sBBQQIII")  # b"GZIDX", version, flags, sizes, spacing, window, points
_POINT = struct.Struct("<QQBB")  # compressed offset, decompressed offset, bits, has a window


def thinned(index: bytes, spacing: int) -> bytes:
    """`index` (indexed_gzip's format) keeping its first and last points and, between,
    one at least `spacing` decompressed bytes past the one kept before it."""
    magic, version, flags, compressed, size, _, window, count = _HEADER.unpack_from(index)
    if magic != b"GZIDX" or version != 1:
        raise ValueError(f"not an indexed_gzip index of version 1 ({magic!r}, {version})")
    points = [_POINT.unpack_from(index, _HEADER.size + i * _POINT.size) for i in range(count)]
    windows, at = [], _HEADER.size + count * _POINT.size
    for point in points:
        windows.append(index[at : at + window] if point[3] else b"")
        at += window if point[3] else 0
    kept, last = [], -spacing
    for i, point in enumerate(points):
        if i in (0, count - 1) or point[1] - last >= spacing:
            kept.append(i)
            last = point[1]
    header = _HEADER.pack(magic, version, flags, compressed, size, spacing, window, len(kept))
    return b"".join([header, *(_POINT.pack(*points[i]) for i in kept), *(windows[i] for i in kept)])


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
