"""Streaming FASTQ input, beside the FASTA reader (`fasta.py`), with the same two passes.

A read is a record: its id is the header's first word (after '@'), its sequence the
read, with U read as T as in FASTA (`fasta.dna_letters`); qualities are checked for
shape and then ignored (VirNucPro scores sequence only). Records are four lines each,
`@header`, sequence, `+[header]`, qualities, as every current sequencer and tool
writes them: wrapped (multi-line) FASTQ is refused, because a quality line may itself
begin with '@' or '+' and only the line count tells a header from qualities. Blank
lines between records are allowed (and belong to the record before them, so a record's
bytes run to the next header, as in FASTA).

* `scan_fastq` (`FastqScanner`, fed by input_pass.InputPass) validates the whole file
  in one pass with O(1) memory per read (an 8-byte id hash, for the unique-id check),
  naming the file and line of a problem: many reads at a time with numpy
  (record_blocks.check_fastq), line by line where that cannot vouch for them.
* `parse_fastq` turns lines from any record start onward into records with their byte
  spans; the worker reads a unit with it (via `inputs.parse_records`).
* `HeaderLines` tells which lines are headers, for planning units and listing ids.

Offsets are positions in the decompressed stream, as for FASTA.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from .fasta import (
    FastaRecord,
    RecordStart,
    dna_letters,
    open_binary,
    record_id,
)
from .input_error import FastqError
from .input_pass import FastaScan, scan_file
from .record_blocks import DNA_BYTES, LINES_PER_RECORD, check_fastq
from .record_ids import IdHashes, check_unique_ids

# Phred+33 (and the old +64) qualities are printable ASCII from '!' to '~'.
_QUALITY_BYTES = bytes(range(33, 127))


class HeaderLines:
    """Feed it every line in order; says whether each one is a record's header line.

    Only the position in the 4-line layout decides (no validation: scan first), with
    blank lines skipped where a header is due.
    """

    def __init__(self) -> None:
        self._position = 0  # 0: a header is due; 1-3: sequence, '+', qualities

    def is_header(self, line: bytes) -> bool:
        if self._position == 0:
            if not line.strip():
                return False
            self._position = 1
            return True
        self._position = (self._position + 1) % LINES_PER_RECORD
        return False


def record_starts(path: str | os.PathLike[str]) -> Iterator[RecordStart]:
    """Where each read starts, with its id and header line (no validation: scan first)."""
    headers = HeaderLines()
    offset = index = 0
    with open_binary(path) as raw:
        for line_no, line in enumerate(raw, 1):
            if headers.is_header(line):
                rid = record_id(line[1:].decode("ascii"))
                yield RecordStart(index, offset, rid, line_no)
                index += 1
            offset += len(line)


def scan_fastq(
    path: str | os.PathLike[str], on_record: Callable[[RecordStart], None] | None = None
) -> FastaScan:
    """Validate the whole file, report each read's start to `on_record`, and check
    that read ids are unique."""
    scanner = FastqScanner(path, on_record)
    scan = scan_file(path, scanner)
    check_unique_ids([(path, scanner.id_hashes)], record_starts)
    return scan


class FastqScanner:
    """The validating scan of a FASTQ file, fed its bytes in order (`take`, as
    input_pass.InputPass does); `id_hashes` is kept for the caller's unique-id check
    (across several files, for a job).

    Whole records go through numpy (record_blocks.check_fastq) many at a time; what
    it cannot vouch for, line by line here, so errors are worded in one place.
    `on_record` (a RecordStart per read) makes it read every line here."""

    def __init__(
        self, path: str | os.PathLike[str], on_record: Callable[[RecordStart], None] | None
    ):
        self.path = path
        self.on_record = on_record
        self.id_hashes = IdHashes()
        self._offset = self.line_no = self.records = self._bases = 0
        self._position = 0  # the line due next: 0 header, 1 sequence, 2 '+', 3 qualities
        self._header_line = 0
        self._id = ""
        self._length = 0
        self._starts: list[int] = []  # record starts found line by line, for `take`

    def take(self, data: bytes, final: bool) -> tuple[int, np.ndarray]:
        """See `input_pass.FormatScanner.take`."""
        if self._position != 0:  # finish the record a line-by-line read left open
            return self._by_line(data, final, to_record_end=True)
        checked = None if self.on_record else check_fastq(data)
        if checked is None:
            return self._by_line(data, final)
        starts = checked.starts + self._offset
        self.id_hashes.extend(checked.id_hashes)
        self._offset += checked.end
        self.line_no += checked.lines
        self.records += checked.records
        self._bases += checked.bases
        return checked.end, starts

    def _by_line(
        self, data: bytes, final: bool, to_record_end: bool = False
    ) -> tuple[int, np.ndarray]:
        """Scan whole lines of `data` (the last one too when `final`), or only up to
        the end of the current record when `to_record_end`."""
        end = len(data) if final else data.rfind(b"\n") + 1
        used = 0
        self._starts = []
        for line in io.BytesIO(memoryview(data)[:end]):
            if to_record_end and self._position == 0 and line.strip():
                break
            self._feed(line)
            used += len(line)
        return used, np.array(self._starts, dtype=np.int64)

    def finish(self) -> FastaScan:
        """After the last bytes: the counts, or the error of a file that ends badly."""
        if self._position != 0:
            due = ("", "its sequence", "its '+' line", "its quality line")[self._position]
            raise self._error(
                f"truncated record: the file ends (after line {self.line_no}) inside read "
                f"{self._id!r}, before {due}; was the file cut short?",
                line=self._header_line,
            )
        if self.records == 0:
            raise FastqError(self.path, "no FASTQ records ('@' header lines) found")
        return FastaScan(records=self.records, bases=self._bases)

    def _feed(self, line: bytes) -> None:
        self.line_no += 1
        start = self._offset
        self._offset += len(line)
        body = line.rstrip(b"\r\n")
        step = (self._header, self._sequence, self._plus, self._quality)[self._position]
        step(body, start)

    def _error(self, reason: str, line: int | None = None) -> FastqError:
        return FastqError(self.path, reason, line=self.line_no if line is None else line)

    def _header(self, body: bytes, start: int) -> None:
        if not body.strip():
            return  # blank lines between records
        if not body.startswith(b"@"):
            hint = " (a FASTA header: one file must be all FASTA or all FASTQ)"
            raise self._error(
                f"expected a FASTQ header line starting with '@'"
                f"{hint if body.startswith(b'>') else ''}; FASTQ records are 4 lines: "
                "@header, sequence, '+', qualities (wrapped FASTQ is not supported)"
            )
        rid = record_id(self._ascii(body[1:]))
        if not rid:
            raise self._error("empty FASTQ header (no read id)")
        self.id_hashes.add_id(rid)
        self._starts.append(start)
        if self.on_record is not None:
            self.on_record(RecordStart(self.records, start, rid, self.line_no))
        self.records += 1
        self._header_line, self._id, self._position = self.line_no, rid, 1

    def _sequence(self, body: bytes, start: int) -> None:
        if not body:
            raise self._error(f"read {self._id!r} has no sequence (an empty line after its header)")
        bad = body.translate(None, DNA_BYTES)
        if bad:
            raise self._error(_describe_bad_sequence(bad))
        self._length, self._position = len(body), 2
        self._bases += len(body)

    def _plus(self, body: bytes, start: int) -> None:
        if not body.startswith(b"+"):
            raise self._error(
                f"missing '+' line after the sequence of read {self._id!r} (header on line "
                f"{self._header_line}); FASTQ records are 4 lines: @header, sequence, '+', "
                "qualities (wrapped FASTQ is not supported)"
            )
        self._position = 3

    def _quality(self, body: bytes, start: int) -> None:
        if len(body) != self._length:
            raise self._error(
                f"the quality line of read {self._id!r} has {len(body)} characters, its "
                f"sequence {self._length}; they must be equally long (a damaged or "
                "wrapped record?)"
            )
        if body.translate(None, _QUALITY_BYTES):
            raise self._error(f"the quality line of read {self._id!r} holds non-text bytes")
        self._position = 0

    def _ascii(self, data: bytes) -> str:
        try:
            return data.decode("ascii")
        except UnicodeDecodeError as exc:
            raise self._error("non-ASCII bytes: binary data, not FASTQ") from exc


def _describe_bad_sequence(bad: bytes) -> str:
    if any(b > 127 or b < 32 for b in bad):
        return "non-text bytes: binary data, not FASTQ"
    letters = "".join(sorted(set(bad.decode("ascii"))))
    return f"characters that are not nucleotides: {letters!r} (DNA or RNA reads are expected)"


def parse_fastq(
    lines: Iterable[bytes], *, offset: int, first_index: int, path: str | os.PathLike[str]
) -> Iterator[FastaRecord]:
    """Records from `lines`, which start at a read's header at byte `offset`.

    A record is yielded once the next header (or the end) is seen, so that its span
    ends where the next record starts, blank lines included: the unit digests and
    resume offsets agree with the planner's unit boundaries.
    """
    pending: FastaRecord | None = None
    record: list[bytes] = []  # the current record's lines: header, sequence, '+'
    index, record_start = first_index, offset
    for line in lines:
        start = offset
        offset += len(line)
        if not record and not line.strip():
            continue  # a blank line between records
        if not record and pending is not None:
            yield _with_end(pending, start)
            pending = None
        if not record:
            record_start = start
        record.append(line)
        if len(record) < LINES_PER_RECORD:
            continue
        pending = _record(record, index, record_start, path)
        record, index = [], index + 1
    if record:
        raise FastqError(path, "truncated record at the end of the data")
    if pending is not None:
        yield _with_end(pending, offset)


def _record(
    lines: list[bytes], index: int, start: int, path: str | os.PathLike[str]
) -> FastaRecord:
    header, sequence, plus, _ = lines
    if not header.startswith(b"@") or not plus.startswith(b"+"):
        raise FastqError(path, f"byte offset {start} is not the start of a FASTQ record")
    rid = record_id(header[1:].decode("ascii"))
    bases = dna_letters(sequence.rstrip(b"\r\n").decode("ascii"))
    return FastaRecord(rid, bases, index, start, start)


def _with_end(record: FastaRecord, end: int) -> FastaRecord:
    return FastaRecord(record.id, record.sequence, record.index, record.offset, end)
