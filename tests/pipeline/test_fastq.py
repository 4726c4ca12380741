"""FASTQ input: detection by content, validation naming file and line, records from
any record start with byte spans, and the same records as the equivalent FASTA."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from virnuc.daemon.jobs.planner import unit_spans
from virnuc.input_digest import digest_of_range
from virnuc.pipeline.fasta import FastaError
from virnuc.pipeline.inputs import (
    detect_format,
    read_records,
    record_starts,
    scan_input,
)

from tests.support.inputs import FASTQ, write

SAME_AS_FASTA = b">r1 first read\nACGTACGTAA\n>r2\nacgtn\n>r3 x\nGGGCCCAAATTT\n"


@pytest.mark.parametrize("name", ["reads.fq", "reads.fq.gz", "reads.txt"])
def test_fastq_is_detected_by_content_plain_or_gzip(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, b"\n" + FASTQ, name)
    assert detect_format(path) == "fastq"
    assert detect_format(write(tmp_path, SAME_AS_FASTA, "x.fq")) == "fasta"  # not by name


@pytest.mark.parametrize("name", ["reads.fq", "reads.fq.gz"])
def test_reads_are_records_with_the_same_ids_and_sequences_as_the_fasta(
    tmp_path: Path, name: str
) -> None:
    fastq, fasta = write(tmp_path, FASTQ, name), write(tmp_path, SAME_AS_FASTA, "same.fa")

    assert scan_input(fastq).records == 3
    assert scan_input(fastq).bases == scan_input(fasta).bases == 27
    got = [(r.index, r.id, r.sequence) for r in read_records(fastq)]
    assert got == [(r.index, r.id, r.sequence) for r in read_records(fasta)]
    assert [s.id for s in record_starts(fastq)] == ["r1", "r2", "r3"]


def test_rna_reads_are_read_as_dna_keeping_their_case_and_their_byte_spans(
    tmp_path: Path,
) -> None:
    rna_bytes = FASTQ.replace(b"T", b"U").replace(b"acgtn", b"acgun")
    rna, dna = write(tmp_path, rna_bytes, "rna.fq"), write(tmp_path, FASTQ)

    assert scan_input(rna).bases == scan_input(dna).bases  # the validator accepts U and u
    assert list(read_records(rna)) == list(read_records(dna))  # ids, sequences, spans
    assert [r.sequence for r in read_records(rna)] == ["ACGTACGTAA", "acgtn", "GGGCCCAAATTT"]


def test_a_record_span_runs_to_the_next_header_and_reading_resumes_from_any_start(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, FASTQ)
    records = list(read_records(path))
    starts = [s.offset for s in record_starts(path)]

    assert [r.offset for r in records] == starts
    assert [r.end_offset for r in records] == [*starts[1:], len(FASTQ)]  # blank line: r2's
    assert [s.line for s in record_starts(path)] == [1, 5, 10]
    resumed = list(read_records(path, offset=starts[1], first_index=1, count=1))
    assert [(r.index, r.id) for r in resumed] == [(1, "r2")]


@pytest.mark.parametrize("name", ["reads.fq", "reads.fq.gz"])
def test_units_of_a_fastq_cut_at_headers_never_at_quality_lines(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, FASTQ * 1, name)
    spans = list(unit_spans(path, 1))
    starts = [s.offset for s in record_starts(path)]

    assert [(first, start) for first, start, _, _ in spans] == list(enumerate(starts))
    assert [end for _, _, end, _ in spans] == [*starts[1:], len(FASTQ)]
    for _, start, end, digest in spans:
        assert digest_of_range(path, start, end) == digest


BAD_FASTQ = [
    pytest.param(
        b"@r1\nACGT\n+\nIII\n", 4, "the quality line of read 'r1' has 3 characters", id="short-qual"
    ),
    pytest.param(b"@r1\nACGT\n+\nIIIII\n", 4, "has 5 characters, its sequence 4", id="long-qual"),
    pytest.param(
        b"@r1\nACGT\nIIII\n", 3, "missing '\\+' line after the sequence of read 'r1'", id="no-plus"
    ),
    pytest.param(
        b"@r1\nAC\n+\nII\n@r2\nACGT\n",
        5,
        "truncated record: .* inside read 'r2'",
        id="cut-after-seq",
    ),
    pytest.param(b"@r1\nAC\n+\nII\n@r2\n", 5, "before its sequence", id="cut-after-header"),
    pytest.param(b"@r1\nAC\n+\nII\nACGT\n", 5, "expected a FASTQ header line", id="no-header"),
    pytest.param(b"@r1\nAC\n+\nII\n>r2\nAC\n", 5, "a FASTA header", id="fasta-inside"),
    pytest.param(b"@\nAC\n+\nII\n", 1, "empty FASTQ header", id="empty-id"),
    pytest.param(b"@r1\n\n+\n\n", 2, "read 'r1' has no sequence", id="empty-read"),
    pytest.param(b"@r1\nEFIL\n+\nIIII\n", 2, "not nucleotides: 'EFIL'", id="protein"),
    pytest.param(b"@r1\nACGT\n+\nII\x01I\n", 4, "non-text bytes", id="binary-qual"),
    pytest.param(
        b"@r1\nAC\n+\nII\n@r1 again\nAC\n+\nII\n",
        5,
        "duplicate record id 'r1' \\(first on line 1\\)",
        id="dup",
    ),
]


@pytest.mark.parametrize(("data", "line", "reason"), BAD_FASTQ)
@pytest.mark.parametrize("name", ["bad.fq", "bad.fq.gz"])
def test_a_bad_fastq_is_refused_naming_the_file_and_line(
    tmp_path: Path, name: str, data: bytes, line: int, reason: str
) -> None:
    path = write(tmp_path, data, name)
    with pytest.raises(FastaError, match=reason) as raised:
        scan_input(path)
    assert raised.value.line == line
    assert str(raised.value).startswith(f"{path}, line {line}: ")


def test_a_truncated_fastq_gz_stream_names_the_line_it_breaks_at(tmp_path: Path) -> None:
    whole = gzip.compress(FASTQ * 200)
    path = tmp_path / "cut.fq.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(FastaError, match="ends early or is damaged") as raised:
        scan_input(path)
    assert raised.value.line is not None
    assert raised.value.line > 1
