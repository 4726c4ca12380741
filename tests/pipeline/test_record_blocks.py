"""The FASTQ scan's numpy fast path accepts exactly what the line scanner accepts, finds
the same records and ids, and leaves every error to the line scanner's words."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from virnuc.pipeline import input_pass
from virnuc.pipeline.fasta import FastaScanner
from virnuc.pipeline.fastq import FastqScanner
from virnuc.pipeline.input_error import FastaError
from virnuc.pipeline.input_pass import InputPass
from virnuc.pipeline.record_blocks import check_fastq
from virnuc.pipeline.record_ids import id_hash

SEED = int(os.environ.get("VIRNUC_TEST_SEED", "23"))


def reads(count: int, rng: random.Random) -> list[list[bytes]]:
    """`count` valid 4-line records: ids with and without descriptions, mixed case,
    RNA letters, IUPAC codes, qualities that begin with '@' or '+'."""
    records = []
    for i in range(count):
        length = rng.randint(1, 120)
        bases = bytes(rng.choice(b"ACGTUNacgtuRYKM") for _ in range(length))
        quals = bytes(rng.choice(b"@+!#5FIJ~") for _ in range(length))
        header = rng.choice([b"r%d" % i, b"r%d desc %d" % (i, i), b"r%d\tx" % i])
        records.append([b"@" + header, bases, rng.choice([b"+", b"+" + header]), quals])
    return records


def text(records: list[list[bytes]], newline: bytes = b"\n") -> bytes:
    return b"".join(newline.join(lines) + newline for lines in records)


def scan(
    path: Path, *, by_line: bool, kind: type[FastqScanner | FastaScanner] = FastqScanner
) -> tuple[int, int, list[int], list[int]]:
    """(records, bases, record starts, id hashes) of a pass; `by_line` forces the
    line scanner (a RecordStart callback reads every line)."""
    scanner = kind(path, (lambda start: None) if by_line else None)
    run = InputPass(path, scanner)
    starts = [int(s) for block in run for s in block.starts]
    assert run.scan is not None
    return run.scan.records, run.scan.bases, starts, scanner.id_hashes.in_memory().tolist()


def outcome(
    path: Path, *, by_line: bool, kind: type[FastqScanner | FastaScanner] = FastqScanner
) -> object:
    """The pass's result, or its error's words."""
    try:
        return scan(path, by_line=by_line, kind=kind)
    except FastaError as exc:
        return str(exc)


@pytest.mark.parametrize("read_size", [5, 64, 1000, 1 << 20])
@pytest.mark.parametrize("layout", ["plain", "blank lines", "crlf"])
def test_the_fast_path_finds_what_the_line_scanner_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_size: int, layout: str
) -> None:
    monkeypatch.setattr(input_pass, "READ", read_size)
    records = reads(300, random.Random(SEED))
    if layout == "blank lines":
        records[100][3] += b"\n\n"  # blank lines between records (legal, rare)
    data = text(records, b"\r\n" if layout == "crlf" else b"\n")
    path = tmp_path / "in.fq"
    path.write_bytes(data)

    fast = scan(path, by_line=False)

    assert fast == scan(path, by_line=True)
    assert fast[0] == 300
    assert fast[2][:2] == [0, len(text(records[:1], b"\r\n" if layout == "crlf" else b"\n"))]
    first_id = records[0][0][1:].split()[0].decode()
    assert fast[3][0] == id_hash(first_id)


def test_the_fast_path_takes_whole_plain_records_and_leaves_the_rest() -> None:
    records = reads(10, random.Random(SEED))
    block = text(records) + b"@partial\nACG"

    checked = check_fastq(block)

    assert checked is not None
    assert checked.records == 10
    assert checked.end == len(text(records))
    assert check_fastq(text(records[:3]) + b"\n" + text(records[3:])) is None  # blank


def _mutations() -> dict[str, Callable[[list[bytes]], list[bytes]]]:
    return {
        "bad base": lambda r: [r[0], r[1][:-1] + b"E", r[2], r[3]],
        "space in sequence": lambda r: [r[0], b"A C", r[2], b"III"],
        "quality too short": lambda r: [r[0], r[1], r[2], r[3][:-1]],
        "no plus": lambda r: [r[0], r[1], b"-", r[3]],
        "no at": lambda r: [b">" + r[0][1:], r[1], r[2], r[3]],
        "empty id": lambda r: [b"@", r[1], r[2], r[3]],
        "leading space id": lambda r: [b"@ x", r[1], r[2], r[3]],
        "non-ascii header": lambda r: [r[0] + b"\xc3\xa9", r[1], r[2], r[3]],
        "control in quality": lambda r: [r[0], r[1], r[2], b"\x01" + r[3][1:]],
        "space in quality": lambda r: [r[0], r[1], r[2], b" " + r[3][1:]],
        "empty sequence": lambda r: [r[0], b"", r[2], b""],
        "duplicate id": lambda r: [b"@r0", r[1], r[2], r[3]],
    }


@pytest.mark.parametrize("mutation", sorted(_mutations()))
@pytest.mark.parametrize("where", [0, 150, 299])
def test_every_oddity_is_judged_and_worded_as_the_line_scanner_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mutation: str, where: int
) -> None:
    monkeypatch.setattr(input_pass, "READ", 4096)
    records = reads(300, random.Random(SEED))
    records[where] = _mutations()[mutation](records[where])
    path = tmp_path / "in.fq"
    path.write_bytes(text(records))

    fast = outcome(path, by_line=False)

    assert fast == outcome(path, by_line=True)
    if mutation in ("leading space id", "duplicate id"):  # legal here: "@ x" is id x;
        assert not isinstance(fast, str)  # duplicates are the job's check, after the pass
    else:
        assert isinstance(fast, str)
        assert any(f"line {4 * where + k}:" in fast for k in (1, 2, 3, 4)), fast


def test_a_file_cut_inside_a_record_is_reported_as_by_the_line_scanner(tmp_path: Path) -> None:
    records = reads(50, random.Random(SEED))
    path = tmp_path / "cut.fq"
    path.write_bytes(text(records)[: -len(records[-1][3]) - 1])  # without its last line

    message = outcome(path, by_line=False)

    assert isinstance(message, str)
    assert "truncated record" in message
    assert message == outcome(path, by_line=True)


def contigs(count: int, rng: random.Random) -> list[list[bytes]]:
    """`count` valid FASTA records: a header, then sequence lines of varied width,
    with spaces, tabs and blank lines among them (all legal)."""
    records = []
    for i in range(count):
        length = rng.randint(1, 400)
        bases = bytes(rng.choice(b"ACGTUNacgtuRYKM-") for _ in range(length))
        width = rng.choice([60, 70, 1000])
        lines = [bases[j : j + width] for j in range(0, length, width)]
        if i % 7 == 3:
            lines.insert(1, b"")
        if i % 11 == 5:
            lines[0] = b" \t" + lines[0]
        header = rng.choice([b">c%d" % i, b">c%d len=%d" % (i, length), b">c%d\tx" % i])
        records.append([header, *lines])
    return records


@pytest.mark.parametrize("read_size", [5, 300, 4096, 1 << 20])
@pytest.mark.parametrize("ending", ["\n", "\r\n", "no final newline"])
def test_the_fasta_fast_path_finds_what_the_line_scanner_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_size: int, ending: str
) -> None:
    monkeypatch.setattr(input_pass, "READ", read_size)
    records = contigs(200, random.Random(SEED))
    data = text(records, b"\r\n" if ending == "\r\n" else b"\n")
    path = tmp_path / "in.fa"
    path.write_bytes(data[:-1] if ending == "no final newline" else data)

    fast = outcome(path, by_line=False, kind=FastaScanner)

    assert fast == outcome(path, by_line=True, kind=FastaScanner)
    assert isinstance(fast, tuple)
    assert fast[0] == 200
    assert fast[3][0] == id_hash("c0")


def _fasta_mutations() -> dict[str, Callable[[list[bytes]], list[bytes]]]:
    return {
        "protein letter": lambda r: [r[0], r[1][:-1] + b"E", *r[2:]],
        "no sequence": lambda r: [r[0]],
        "only blank lines": lambda r: [r[0], b"", b"  "],
        "empty header": lambda r: [b">", *r[1:]],
        "leading space id": lambda r: [b"> x", *r[1:]],
        "non-ascii header": lambda r: [r[0] + b"\xc3\xa9", *r[1:]],
        "control in sequence": lambda r: [r[0], b"AC\x01GT", *r[2:]],
        "'>' inside a line": lambda r: [r[0], b"AC>GT", *r[2:]],
        "text before the first header": lambda r: [b"ACGT", *r],
        "duplicate id": lambda r: [b">c0", *r[1:]],
    }


@pytest.mark.parametrize("mutation", sorted(_fasta_mutations()))
@pytest.mark.parametrize("where", [0, 100, 199])
def test_every_fasta_oddity_is_judged_and_worded_as_the_line_scanner_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mutation: str, where: int
) -> None:
    monkeypatch.setattr(input_pass, "READ", 4096)
    records = contigs(200, random.Random(SEED))
    if mutation == "text before the first header" and where:
        where = 0
    records[where] = _fasta_mutations()[mutation](records[where])
    path = tmp_path / "in.fa"
    path.write_bytes(text(records))

    fast = outcome(path, by_line=False, kind=FastaScanner)

    assert fast == outcome(path, by_line=True, kind=FastaScanner)
    legal = ("leading space id", "duplicate id")
    assert isinstance(fast, str) != (mutation in legal), fast
