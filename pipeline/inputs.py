"""A job's input files, FASTA or FASTQ (plain or gzip), behind one interface.

The format of each file is detected by content, as gzip is: the first non-blank byte
of the (decompressed) data is '>' for FASTA and '@' for FASTQ. Everything downstream
(planning, the worker's unit feed, assembly, the in-process run) asks this module,
never `fasta` or `fastq` directly, so both formats share every offset, digest and
resume rule:

* `input_pass` is the one validating read of a file (pipeline/input_pass.py) with its
  format's scanner; `scan_inputs` runs it over every file and checks that record ids
  are unique across all of them (naming both files of a repeated id);
* `record_starts` / `job_record_starts` list where records start, with their ids;
* `parse_records` turns lines from a record start into records with byte spans
  (`read_records` opens a file for it). Both formats read RNA as DNA, U as T
  (`fasta.dna_letters`), once, in these parsers.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path as FsPath
from typing import Literal

from . import fasta, fastq
from .fasta import GZIP_MAGIC, FastaError, FastaRecord, FastaScan, RecordStart, open_binary
from .input_pass import FormatScanner, InputPass
from .record_ids import check_unique_ids

InputFormat = Literal["fasta", "fastq"]
Path = str | os.PathLike[str]
_SNIFF = 1 << 16  # bytes looked at to find the first non-blank one


def detect_format(path: Path) -> InputFormat:
    """'fastq' when the data's first non-blank byte is '@', else 'fasta' (whose scan
    then says what is wrong with a file that is neither)."""
    head = _head(path).lstrip()
    return "fastq" if head.startswith(b"@") else "fasta"


def _head(path: Path) -> bytes:
    """The data's first bytes, decompressed as far as they go: a truncated or damaged
    .gz still shows its start (GzipFile would raise on the first read), and its scan
    then reports the damage with its line."""
    open_binary(path).close()  # a missing file or a directory: FastaError, as the scan's
    with open(path, "rb") as raw:
        head = raw.read(_SNIFF)
    if not head.startswith(GZIP_MAGIC):
        return head
    try:
        return zlib.decompressobj(wbits=31).decompress(head, _SNIFF)
    except zlib.error:
        return b""


def scan_input(path: Path, on_record: Callable[[RecordStart], None] | None = None) -> FastaScan:
    """Validate one file (unique ids within it); see `scan_inputs` for a whole job."""
    return scan_inputs([path], on_record)[0]


def scan_inputs(
    paths: Sequence[Path], on_record: Callable[[RecordStart], None] | None = None
) -> list[FastaScan]:
    """Validate every file in full, then check that ids are unique across all of them;
    raises `FastaError` naming the file and line. Returns each file's counts."""
    passes = [input_pass(path, on_record=on_record) for path in paths]
    for run in passes:
        for _ in run:
            pass
    check_unique_ids([(run.path, run.id_hashes) for run in passes], record_starts)
    return [run.scan for run in passes if run.scan is not None]


def input_pass(
    path: Path,
    index_to: FsPath | None = None,
    on_record: Callable[[RecordStart], None] | None = None,
) -> InputPass:
    """The one validating read of `path` (see pipeline/input_pass.py), with its
    format's scanner; a gzip input is indexed into `index_to`, if given."""
    scanner: FormatScanner
    if detect_format(path) == "fastq":
        scanner = fastq.FastqScanner(path, on_record)
    else:
        scanner = fasta.FastaScanner(path, on_record)
    return InputPass(path, scanner, index_to)


def record_starts(path: Path) -> Iterator[RecordStart]:
    """Where each record of `path` starts (no validation: scan first)."""
    if detect_format(path) == "fastq":
        return fastq.record_starts(path)
    return fasta.record_starts(path)


def job_record_starts(paths: Sequence[str]) -> Iterator[tuple[str, RecordStart]]:
    """Every record start of a job, in input order, with the file it is in."""
    for path in paths:
        for start in record_starts(path):
            yield path, start


def parse_records(
    fmt: InputFormat, lines: Iterable[bytes], *, offset: int, first_index: int, path: Path
) -> Iterator[FastaRecord]:
    """Records from raw `lines` that begin at a record start, byte `offset`; each
    knows its span [offset, end_offset), which runs to the next record's start."""
    if fmt == "fastq":
        return fastq.parse_fastq(lines, offset=offset, first_index=first_index, path=path)
    return fasta.parse_fasta(lines, offset, first_index)


def read_records(
    path: Path, *, offset: int = 0, first_index: int = 0, count: int | None = None
) -> Iterator[FastaRecord]:
    """Records of `path` from `offset` (a record start) on, at most `count` of them."""
    if count == 0:
        return
    fmt = detect_format(path)
    with open_binary(path) as raw:
        if offset:
            raw.seek(offset)  # gzip: from the nearest seek point, or from byte 0 without one
        try:
            for n, record in enumerate(
                parse_records(fmt, raw, offset=offset, first_index=first_index, path=path)
            ):
                yield record
                if count is not None and n + 1 >= count:
                    return
        except (UnicodeDecodeError, EOFError, OSError, zlib.error) as exc:
            raise FastaError(path, f"unreadable {fmt.upper()} ({exc})") from exc


def read_job_records(paths: Sequence[str]) -> Iterator[tuple[str, FastaRecord]]:
    """Every record of a job's inputs in input order, indexed across files, with its
    file: what the in-process run reads."""
    first = 0
    for path in paths:
        index = first
        for record in read_records(path, first_index=first):
            index = record.index + 1
            yield path, record
        first = index
