"""Streaming FASTA input: plain or gzip, read in bounded memory.

Two passes over a file, both streaming:

* `scan_fasta` (`FastaScanner`, fed by input_pass.InputPass) walks the raw bytes once
  to validate the file and to find where each record starts (byte offset, record
  index): many records at a time with numpy (record_blocks.check_fasta), line by line
  where that cannot vouch for them, so every error is worded here. It never holds a
  sequence whole, so a 10 GB file costs only a few bytes per record (an 8-byte hash of
  each id, to find duplicate ids — VirNucPro silently breaks on them).
* `read_records` parses records with Biopython from any record start onward; the
  daemon uses the offsets from the scan to hand out contiguous ranges of records.

RNA is read as DNA: every reader (`parse_fasta` here, `fastq.parse_fastq`) turns U
into T and u into t, as `dna_letters` does, because frames translate A/C/G/T codons
only; an RNA file gives exactly the outputs of the same sequences in DNA. The scan and
the unit digests see the raw bytes, so offsets and digests are those of the file.

Offsets are positions in the *decompressed* stream. A `.gz` input seeks from the
nearest point of its seek-point index when the process has one in use
(pipeline/gzip_index.py), else by decompressing from its start; plain files seek
directly.
"""

from __future__ import annotations

import io
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from Bio.SeqIO.FastaIO import SimpleFastaParser

from .gzip_index import open_gzip
from .gzip_pass import GZIP_MAGIC as GZIP_MAGIC  # re-exported
from .input_error import FastaError as FastaError  # re-exported: its historical home
from .input_error import open_input
from .input_pass import FastaScan as FastaScan  # re-exported, as FastaError
from .input_pass import scan_file
from .record_blocks import DNA_BYTES as _DNA_BYTES
from .record_blocks import check_fasta
from .record_ids import IdHashes, check_unique_ids


@dataclass(frozen=True, slots=True)
class FastaRecord:
    """One input record. `id` is the header's first word, as VirNucPro uses it.

    `offset` is where its header starts and `end_offset` where the next record (or
    the data) starts, in the decompressed stream.
    """

    id: str
    sequence: str
    index: int
    offset: int = 0
    end_offset: int = 0


@dataclass(frozen=True, slots=True)
class RecordStart:
    """Where a record begins in the decompressed stream (`line`: its header's line
    number, 1-based; 0 where it is not known)."""

    index: int
    offset: int
    id: str
    line: int = 0


def open_binary(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a FASTA file for reading bytes, transparently gunzipping by magic number
    (through the input's seek-point index where one is in use: pipeline/gzip_index)."""
    raw = open_input(path)
    if raw.read(2) == GZIP_MAGIC:
        raw.close()
        return open_gzip(Path(path))
    raw.seek(0)
    return raw


def record_id(header: str) -> str:
    """The header's first word: what VirNucPro (and our outputs) call the record id."""
    words = header.split(None, 1)
    return words[0] if words else ""


def read_records(
    path: str | os.PathLike[str], *, offset: int = 0, first_index: int = 0, count: int | None = None
) -> Iterator[FastaRecord]:
    """Yield records from `offset` (a record start from `scan_fasta`) onward.

    `first_index` is the index of the record at `offset`; at most `count` records are
    read. Biopython does the parsing; the file is never loaded whole. Each record
    knows its byte span, so a checkpoint can say where to resume.
    """
    if count == 0:
        return
    with open_binary(path) as raw:
        _seek(raw, offset)
        try:
            for n, record in enumerate(parse_fasta(raw, offset, first_index)):
                yield record
                if count is not None and n + 1 >= count:
                    return
        except (UnicodeDecodeError, EOFError, OSError, zlib.error) as exc:
            raise FastaError(path, f"unreadable FASTA ({exc})") from exc


def parse_fasta(lines: Iterable[bytes], offset: int, first_index: int) -> Iterator[FastaRecord]:
    """Records from raw `lines` that begin at a record start, byte `offset`, with RNA
    letters read as DNA (`dna_letters`)."""
    tracked = _TrackedLines(lines, offset)
    for n, (title, sequence) in enumerate(SimpleFastaParser(tracked)):
        start, end = tracked.span_of_oldest()
        yield FastaRecord(record_id(title), dna_letters(sequence), first_index + n, start, end)


def dna_letters(sequence: str) -> str:
    """`sequence` with U read as T and u as t; the other letters, their case included,
    are kept."""
    return sequence.replace("U", "T").replace("u", "t")


class _TrackedLines:
    """Text lines for Biopython that remember where each header line started.

    Biopython yields a record when it reads the *next* header (or hits the end), so
    at that moment the oldest remembered header is the record's start and the next
    one, or the end of the data, is where it stops.
    """

    def __init__(self, raw: Iterable[bytes], offset: int):
        self._raw = raw
        self._offset = offset
        self._headers: deque[int] = deque()

    def __iter__(self) -> Iterator[str]:
        for line in self._raw:
            if line.startswith(b">"):
                self._headers.append(self._offset)
            self._offset += len(line)
            yield line.decode("ascii").replace("\r\n", "\n")

    def span_of_oldest(self) -> tuple[int, int]:
        start = self._headers.popleft()
        end = self._headers[0] if self._headers else self._offset
        return start, end


def _seek(raw: BinaryIO, offset: int) -> None:
    if offset:
        raw.seek(offset)  # gzip: from the nearest seek point, or from byte 0 without one


def scan_fasta(
    path: str | os.PathLike[str], on_record: Callable[[RecordStart], None] | None = None
) -> FastaScan:
    """Validate the whole file and report each record start to `on_record`.

    Raises `FastaError` naming the line for: no records, text before the first
    header, an empty header, a record without sequence, characters that are not
    nucleotides (binary data, protein or FASTQ files), a truncated gzip stream, and
    duplicate record ids (naming them).
    """
    scan, id_hashes = scan_fasta_ids(path, on_record)
    check_unique_ids([(path, id_hashes)], record_starts)
    return scan


def scan_fasta_ids(
    path: str | os.PathLike[str], on_record: Callable[[RecordStart], None] | None = None
) -> tuple[FastaScan, IdHashes]:
    """`scan_fasta` without the unique-id check: the counts and each record's id hash,
    for a check across several files (`inputs.scan_inputs`)."""
    scanner = FastaScanner(path, on_record)
    return scan_file(path, scanner), scanner.id_hashes


class FastaScanner:
    """The validating scan of a FASTA file, line by line, fed its bytes in order
    (`take`, as input_pass.InputPass does); O(1) memory per record."""

    def __init__(
        self, path: str | os.PathLike[str], on_record: Callable[[RecordStart], None] | None
    ):
        self.path = path
        self.on_record = on_record
        self.offset = 0
        self.line_no = 0
        self.records = 0
        self.bases = 0
        self.current_bases = -1  # -1: no record open (none yet, or closed in bulk)
        self.header_line = 0
        self.current_id = ""
        self.id_hashes = IdHashes()  # 8 bytes per record, spilled to disk
        self._starts: list[int] = []  # where the records found by `take` start

    def take(self, data: bytes, final: bool) -> tuple[int, np.ndarray]:
        """See `input_pass.FormatScanner.take`. Whole records go through numpy
        (record_blocks.check_fasta) many at a time; what it cannot vouch for, line by
        line here, so errors are worded in one place. `on_record` (a RecordStart per
        record) makes it read every line here."""
        if not data.startswith(b">"):  # inside a record: read on to the next header
            return self._by_line(data, final, to_header=True)
        checked = None if self.on_record else check_fasta(data, final)
        if checked is None:
            return self._by_line(data, final)
        self._close_record()  # the block's first header closes the record before it
        self.id_hashes.extend(checked.id_hashes)
        starts = checked.starts + self.offset
        self.offset += checked.end
        self.line_no += checked.lines
        self.records += checked.records
        self.bases += checked.bases
        self.current_bases = -1  # the block's records are closed: none is open
        return checked.end, starts

    def _by_line(self, data: bytes, final: bool, to_header: bool = False) -> tuple[int, np.ndarray]:
        """Scan whole lines of `data` (the last one too when `final`), or only up to
        the next header when `to_header`."""
        end = len(data) if final else data.rfind(b"\n") + 1
        used = 0
        self._starts = []
        for line in io.BytesIO(memoryview(data)[:end]):
            if to_header and line.startswith(b">"):
                break
            self.feed(line)
            used += len(line)
        return used, np.array(self._starts, dtype=np.int64)

    def feed(self, line: bytes) -> None:
        self.line_no += 1
        start = self.offset
        self.offset += len(line)
        body = line.rstrip(b"\r\n")
        if body.startswith(b">"):
            self._header(body, start)
        elif body.strip():
            self._sequence(body)

    def _header(self, body: bytes, start: int) -> None:
        self._close_record()
        header = _ascii(self.path, body[1:], self.line_no)
        rid = record_id(header)
        if not rid:
            raise FastaError(self.path, "empty FASTA header (no record id)", line=self.line_no)
        self.id_hashes.add_id(rid)
        self._starts.append(start)
        if self.on_record is not None:
            self.on_record(RecordStart(self.records, start, rid, self.line_no))
        self.records += 1
        self.current_bases = 0
        self.header_line = self.line_no
        self.current_id = rid

    def _sequence(self, body: bytes) -> None:
        if self.current_bases < 0:
            hint = " (this looks like FASTQ)" if body.startswith(b"@") else ""
            raise FastaError(
                self.path, f"text before the first '>' header{hint}", line=self.line_no
            )
        residue = body.replace(b" ", b"").replace(b"\t", b"")
        bad = residue.translate(None, _DNA_BYTES)
        if bad:
            raise FastaError(self.path, _describe_bad_bytes(bad), line=self.line_no)
        self.current_bases += len(residue)

    def _close_record(self) -> None:
        if self.current_bases == 0:
            raise FastaError(
                self.path,
                f"record {self.current_id!r} has no sequence (a header with no sequence "
                "lines after it); remove the header or add its sequence",
                line=self.header_line,
            )
        self.bases += max(self.current_bases, 0)

    def finish(self) -> FastaScan:
        if self.records == 0:
            raise FastaError(self.path, "no FASTA records ('>' header lines) found")
        self._close_record()
        return FastaScan(records=self.records, bases=self.bases)


def _ascii(path: str | os.PathLike[str], data: bytes, line: int) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise FastaError(path, "non-ASCII bytes: binary data, not FASTA", line=line) from exc


def _describe_bad_bytes(bad: bytes) -> str:
    if any(b > 127 or b < 32 for b in bad):
        return "non-text bytes: binary data, not FASTA"
    letters = "".join(sorted(set(bad.decode("ascii"))))
    return (
        f"characters that are not nucleotides: {letters!r} (protein FASTA? DNA or RNA is expected)"
    )


def record_starts(path: str | os.PathLike[str]) -> Iterator[RecordStart]:
    """Where each record starts, reading header lines only (no validation: scan first)."""
    with open_binary(path) as raw:
        yield from _record_starts(raw)


def _record_starts(raw: BinaryIO) -> Iterator[RecordStart]:
    offset = index = 0
    for line_no, line in enumerate(raw, 1):
        if line.startswith(b">"):
            yield RecordStart(index, offset, record_id(line[1:].decode("ascii")), line_no)
            index += 1
        offset += len(line)
