"""One read of one input file, FASTA or FASTQ, plain or gzip: all that planning needs.

`InputPass(path, scanner, index_to)` yields the file's decompressed bytes as `Block`s,
each with the offsets of the records that start in it, while the format's scanner
validates every record and hashes its id (for the duplicate check across a job's
files) and a gzip input is checked and indexed on the way (pipeline/gzip_pass.py).
After the last block, `scan` holds the file's counts and `id_hashes` its ids. The
planner cuts and digests units from the same blocks: one read of each input where
there were three, and large reads, so the cost is the decompression's and numpy's
rather than Python's per line.

A scan error in a gzip input may come from a damaged stream (garbage decoded before
the member's CRC32 is checked at its end): the stream is checked again, once the pass
has stopped, so the user hears of the damage and its line rather than of the garbage
(one more read of the file, on this error path only).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from . import gzip_pass
from .gzip_pass import GZIP_MAGIC, GzipPass
from .input_error import FastaError, open_input, unreadable_error
from .prefetch import prefetched
from .record_ids import IdHashes

READ = 1 << 21  # decompressed bytes per block: large enough for numpy, small for caches


class FormatScanner(Protocol):
    """A format's validating scanner, fed the file's bytes in order (`fastq.FastqScanner`,
    `fasta.FastaScanner`)."""

    id_hashes: IdHashes

    @property
    def records(self) -> int: ...

    @property
    def line_no(self) -> int: ...

    def take(self, data: bytes, final: bool) -> tuple[int, np.ndarray]:
        """Scan the start of `data`, the file's next bytes: how many bytes it scanned
        (0 when it needs more; all of them when `final`, the end of the file) and where
        the records that start in them do, as offsets in the stream."""
        ...

    def finish(self) -> FastaScan: ...


@dataclass(frozen=True, slots=True)
class FastaScan:
    """A file's counts (FASTA or FASTQ alike: the name predates FASTQ input)."""

    records: int
    bases: int


@dataclass(frozen=True, slots=True)
class Block:
    """Consecutive decompressed bytes of a file, validated."""

    data: memoryview
    offset: int  # where data[0] is in the decompressed stream
    first_record: int  # the file's index of the first record that starts in `data`
    starts: np.ndarray  # where each record that starts in `data` does, in the stream


class InputPass:
    """Iterate it once (see the module doc)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        scanner: FormatScanner,
        index_to: Path | None = None,
    ) -> None:
        self.path = path
        self.scanner = scanner
        self.index_to = index_to
        self.scan: FastaScan | None = None
        self._gzipped = False

    @property
    def id_hashes(self) -> IdHashes:
        return self.scanner.id_hashes

    def __iter__(self) -> Iterator[Block]:
        try:
            yield from self._read()
        except FastaError:
            if self._gzipped:  # a damaged stream is the error to name (see the module doc)
                gzip_pass.verify(self.path)
            raise

    def _read(self) -> Iterator[Block]:
        with open_input(self.path) as plain:
            self._gzipped = plain.read(2) == GZIP_MAGIC
            plain.seek(0)
            with _source(self.path, plain, self._gzipped) as source:
                yield from self._blocks(source)
                self.scan = self.scanner.finish()
                if isinstance(source, GzipPass):
                    source.finish(self.index_to)

    def _blocks(self, source: Source) -> Iterator[Block]:
        # Decompress while scanning; the reading thread is joined (closing) before the
        # source is closed, whatever ends the loop: it must never read a closed one.
        with closing(prefetched(_chunks(source), depth=2)) as chunks:
            carry, offset, final = b"", 0, False
            while not final:
                chunk = self._next(chunks, carry)
                final = not chunk
                data = carry + chunk if carry else chunk
                while data:
                    first = self.scanner.records
                    used, starts = self.scanner.take(data, final)
                    if used == 0:
                        break
                    yield Block(memoryview(data)[:used], offset, first, starts)
                    offset += used
                    data = data[used:]
                carry = data

    def _next(self, chunks: Generator[bytes, None, None], carry: bytes) -> bytes:
        """The next chunk of the file, b"" at its end; a read that fails names the line
        where the data went wrong (for a gzip input, `verify` finds it: the read is
        ahead of the scan)."""
        try:
            return next(chunks, b"")
        except (EOFError, OSError) as exc:
            line = self.scanner.line_no + carry.count(b"\n") + 1
            raise unreadable_error(self.path, exc, line) from exc


Source = GzipPass | BinaryIO


def _chunks(source: Source) -> Iterator[bytes]:
    read = source.read if isinstance(source, GzipPass) else lambda: source.read(READ)
    while chunk := read():
        yield chunk


def scan_file(path: str | os.PathLike[str], scanner: FormatScanner) -> FastaScan:
    """Validate one file through `scanner` (a pass whose blocks are not needed)."""
    run = InputPass(path, scanner)
    for _ in run:
        pass
    assert run.scan is not None  # set once the blocks are read
    return run.scan


def _source(
    path: str | os.PathLike[str], plain: BinaryIO, gzipped: bool
) -> AbstractContextManager[Source]:
    """The decompressed bytes: a checking, indexing gzip pass, or the plain file itself."""
    return GzipPass(path, READ) if gzipped else nullcontext(plain)
