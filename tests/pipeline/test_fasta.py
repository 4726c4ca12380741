"""Streaming FASTA input: parsing, offsets, and every way a file can be unusable."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from virnuc.pipeline import inputs
from virnuc.pipeline.fasta import FastaError, RecordStart, read_records, scan_fasta

GOOD = ">a first record\nACGT\nacgtn\n>b\nGGGG\n\n>c x\nTT\n"


def write(tmp_path: Path, text: str | bytes, name: str = "in.fa") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_reads_ids_sequences_and_indexes(tmp_path: Path) -> None:
    records = list(read_records(write(tmp_path, GOOD)))
    assert [(r.id, r.sequence, r.index) for r in records] == [
        ("a", "ACGTacgtn", 0),
        ("b", "GGGG", 1),
        ("c", "TT", 2),
    ]


def test_rna_letters_are_read_as_dna_keeping_their_case(tmp_path: Path) -> None:
    rna = write(tmp_path, ">r one\nAUGU\naugunU\n>s\nUUuu\n", "rna.fa")
    dna = [("r", "ATGTatgtnT"), ("s", "TTtt")]
    assert scan_fasta(rna).bases == 14  # the validator accepts U and u as bases
    assert [(r.id, r.sequence) for r in read_records(rna)] == dna
    assert [(r.id, r.sequence) for r in inputs.read_records(rna)] == dna  # the job's reader


def test_gzip_and_windows_line_endings_read_the_same(tmp_path: Path) -> None:
    def content(path: Path) -> list[tuple[str, str, int]]:
        return [(r.id, r.sequence, r.index) for r in read_records(path)]

    plain = content(write(tmp_path, GOOD))
    crlf = write(tmp_path, GOOD.replace("\n", "\r\n"), "crlf.fa")
    gz = write(tmp_path, gzip.compress(GOOD.replace("\n", "\r\n").encode()), "in.fa.gz")
    assert content(crlf) == plain
    assert content(gz) == plain
    assert scan_fasta(gz).records == 3


@pytest.mark.parametrize("compress", [False, True])
def test_reading_from_a_scanned_offset_resumes_at_that_record(
    tmp_path: Path, compress: bool
) -> None:
    data = GOOD.replace("\n", "\r\n").encode()
    path = write(tmp_path, gzip.compress(data) if compress else data)
    starts: list[RecordStart] = []
    scan = scan_fasta(path, starts.append)
    assert (scan.records, scan.bases) == (3, 15)
    assert [s.id for s in starts] == ["a", "b", "c"]
    everything = list(read_records(path))
    for start in starts:
        tail = list(read_records(path, offset=start.offset, first_index=start.index))
        assert tail == everything[start.index :]
    assert (
        list(read_records(path, offset=starts[1].offset, first_index=1, count=1)) == everything[1:2]
    )


def test_reading_is_lazy(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD * 5000 + "\xff\xfe garbage\n")
    first = next(iter(read_records(path)))  # the broken tail, 200 kB on, is not read yet
    assert first.id == "a"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no FASTA records"),
        ("\n\n", "no FASTA records"),
        (
            "@read1\nACGT\n+\nIIII\n",
            "line 1: text before the first '>' header (this looks like FASTQ)",
        ),
        (">p1\nMKVLAEFIQ\n", "line 2: characters that are not nucleotides: 'EFILQ'"),
        (">a\nACGT\n>b\n>c\nAC\n", "line 3: record 'b' has no sequence"),
        (">a\nACGT\n>b\n", "line 3: record 'b' has no sequence"),
        (">\nACGT\n", "line 1: empty FASTA header"),
        (">a\nAC1GT\n", "line 2: characters that are not nucleotides: '1'"),
        (
            ">a\nACGT\n>b x\nAA\n>a again\nCC\n>b\nG\n",
            "line 5: duplicate record id 'a' (first on line 1); 2 id(s) occur more than once: a, b",
        ),
    ],
)
def test_bad_content_is_named_with_its_line(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(FastaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scan_fasta(write(tmp_path, content))


def test_binary_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FastaError, match="binary data"):
        scan_fasta(write(tmp_path, b">a\nAC\x00\x01\x02GT\n"))
    with pytest.raises(FastaError, match="binary data"):
        scan_fasta(write(tmp_path, b">\xc3\xa9\nACGT\n"))


def test_truncated_gzip_is_refused(tmp_path: Path) -> None:
    whole = gzip.compress((GOOD * 200).encode())
    with pytest.raises(FastaError, match=r"line \d+: the compressed data ends early.*truncated"):
        scan_fasta(write(tmp_path, whole[: len(whole) // 2], "cut.fa.gz"))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(FastaError, match="no such file"):
        scan_fasta(tmp_path / "absent.fa")
    with pytest.raises(FastaError, match="is a directory"):
        scan_fasta(tmp_path)
