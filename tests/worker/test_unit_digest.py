"""Unit digests: the planner digests each unit's bytes, the worker digests them again
as it reads the unit, and a unit whose bytes changed since planning (even with the
file's size and modification time kept) fails its job with "input changed since
submission", publishing nothing. In process: the feed and the protocol
(tests/e2e/test_unit_digest.py runs it through a real virnucd).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path
from typing import Any

import pytest

from virnuc.daemon.jobs.planner import unit_spans
from virnuc.pipeline import gzip_index
from virnuc.pipeline.fasta import FastaRecord
from virnuc.pipeline.inputs import read_records
from virnuc.protocol import Assign, ProtocolError, WireModelSpec, codec, decode_from_daemon
from virnuc.worker.unit_digest import UnitChanged
from virnuc.worker.unit_feed import RecordFeed

from tests.support.harness import write_as_fastq
from tests.support.inputs import as_rna

EXAMPLE = Path(__file__).parents[2] / "examples" / "example.fasta"
MODELS = WireModelSpec(esm="/m/esm.pt", dnabert="/m/bert", classifier="/m/c.pth", chunk_length=300)
UNIT = 5  # records a unit in these tests: the example's 20 make 4 units


def copy_example(tmp_path: Path, gz: bool = False, fastq: bool = False) -> Path:
    """The example's records as FASTA, or FASTQ (`fastq`), gzip-compressed with `gz`."""
    if fastq:
        return write_as_fastq(EXAMPLE, tmp_path / ("in.fq.gz" if gz else "in.fq"))
    path = tmp_path / ("in.fa.gz" if gz else "in.fa")
    data = EXAMPLE.read_bytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def unit_assign(path: Path, unit_id: int, resume_at: int | None = None, **kw: Any) -> Assign:
    """Unit `unit_id` of `path` as the daemon hands it out, digest from the planner;
    `resume_at` (a record of the unit) makes it a resumed unit."""
    first, start, end, digest = list(unit_spans(path, UNIT))[unit_id]
    records = list(read_records(path))
    record = records[first if resume_at is None else resume_at]
    fields: dict[str, Any] = dict(
        job_id="j",
        unit_id=unit_id,
        input=str(path),
        start_offset=record.offset,
        start_record=record.index,
        record_count=min(len(records), first + UNIT) - record.index,
        models=MODELS,
        save_embeddings=False,
        checkpoint_every=2,
        parts_dir="/parts",
        unit_offset=start,
        unit_end_offset=end,
        digest=digest,
    )
    fields.update(kw)
    return Assign(**fields)


def read_feed(assign: Assign) -> tuple[list[FastaRecord], UnitChanged | None, RecordFeed]:
    """What the feed hands the Predictor, and the `UnitChanged` it ended with, if any."""
    feed = RecordFeed(assign, lambda: None)
    got: list[FastaRecord] = []
    try:
        got.extend(feed)
    except UnitChanged as exc:
        return got, exc, feed
    return got, None, feed


def rewrite(path: Path, at: int, new: bytes | None = None) -> None:
    """Overwrite the byte at `at` in place (with another base unless `new` is given)
    and put the modification time back: the input's fingerprint does not change."""
    before = os.stat(path)
    old = path.read_bytes()[at : at + 1]
    with path.open("r+b") as f:
        f.seek(at)
        f.write(new or (b"G" if old.upper() == b"C" else b"C"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert path.read_bytes()[at : at + 1] != old
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )


def sequence_byte(path: Path, record: int) -> int:
    """The offset of the first base of `record` (inside its unit's bytes)."""
    rec = list(read_records(path))[record]
    return path.read_bytes().index(b"\n", rec.offset) + 1


# --- the feed ----------------------------------------------------------------------------


@pytest.mark.parametrize("fastq", [False, True], ids=["fasta", "fastq"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("resume_at", [None, 7], ids=["whole", "resumed"])
def test_an_unchanged_unit_reads_through(
    tmp_path: Path, gz: bool, resume_at: int | None, fastq: bool
) -> None:
    path = copy_example(tmp_path, gz, fastq)
    assign = unit_assign(path, 1, resume_at)
    got, changed, feed = read_feed(assign)
    assert changed is None
    assert feed.failure is None
    assert [r.index for r in got] == list(range(resume_at or 5, 10))


@pytest.mark.parametrize("fastq", [False, True], ids=["fasta", "fastq"])
@pytest.mark.parametrize("resume_at", [None, 17], ids=["whole", "resumed"])
def test_a_gzip_unit_reads_and_verifies_the_same_through_its_index(
    tmp_path: Path, resume_at: int | None, fastq: bool
) -> None:
    path = copy_example(tmp_path, gz=True, fastq=fastq)
    list(unit_spans(path, UNIT, tmp_path / "input-0.gzidx"))
    index = gzip_index.describe(tmp_path / "input-0.gzidx")
    assert index is not None
    assign = unit_assign(path, 3, resume_at)
    try:
        assert gzip_index.use(str(path), index)
        got, changed, feed = read_feed(assign)
    finally:
        gzip_index.use(str(path), None)
    assert changed is None
    assert feed.failure is None
    assert [r.index for r in got] == list(range(resume_at or 15, 20))
    assert got == read_feed(assign)[0]  # as read without the index


def test_an_rna_unit_is_fed_as_its_dna_and_digested_as_the_bytes_it_is(tmp_path: Path) -> None:
    dna = copy_example(tmp_path)
    rna = tmp_path / "rna.fa"
    rna.write_text(as_rna(EXAMPLE.read_text()))
    rna_assign, dna_assign = unit_assign(rna, 1), unit_assign(dna, 1)
    got, changed, _ = read_feed(rna_assign)
    want, _, _ = read_feed(dna_assign)

    assert changed is None  # the planner's digest and the worker's agree on the RNA bytes
    assert rna_assign.digest != dna_assign.digest  # digests are of the raw bytes
    assert len(got) == UNIT
    assert got == want  # ids, DNA sequences, indexes, byte spans


def test_a_unit_rewritten_with_the_same_length_fails_before_its_last_record(
    tmp_path: Path,
) -> None:
    path = copy_example(tmp_path)
    assign = unit_assign(path, 1)
    rewrite(path, sequence_byte(path, 9))  # the unit's last record

    got, changed, _ = read_feed(assign)

    assert changed is not None
    assert str(changed).startswith(f"input changed since submission: {path}: unit 1 (records 5..9")
    assert [r.index for r in got] == [5, 6, 7, 8]  # its last record never reached the models


@pytest.mark.parametrize("fastq", [False, True], ids=["fasta", "fastq"])
def test_a_resumed_unit_still_verifies_the_bytes_before_its_resume_offset(
    tmp_path: Path, fastq: bool
) -> None:
    path = copy_example(tmp_path, fastq=fastq)
    assign = unit_assign(path, 1, resume_at=8)
    rewrite(path, sequence_byte(path, 6))  # read by an earlier run

    got, changed, _ = read_feed(assign)

    assert changed is not None
    assert "input changed since submission" in str(changed)
    assert [r.index for r in got] == [8]


def test_a_resumed_gzip_unit_digests_its_prefix_in_the_decompressed_stream(
    tmp_path: Path,
) -> None:
    plain = copy_example(tmp_path)
    packed = copy_example(tmp_path, gz=True)
    assign = unit_assign(packed, 2, resume_at=12)
    assert assign == dataclasses.replace(unit_assign(plain, 2, resume_at=12), input=str(packed))
    rewrite(plain, sequence_byte(plain, 10))  # the unit's first record
    packed.write_bytes(gzip.compress(plain.read_bytes()))

    got, changed, _ = read_feed(assign)

    assert changed is not None
    assert [r.index for r in got] == [12, 13]


def test_the_next_units_header_rewritten_is_caught_by_this_unit_too(tmp_path: Path) -> None:
    """Unit 1's bytes are intact, but its last record would now run into unit 2."""
    path = copy_example(tmp_path)
    assign = unit_assign(path, 1)
    next_header = list(read_records(path))[10].offset
    rewrite(path, next_header, b"A")

    assert read_feed(assign)[1] is not None


@pytest.mark.parametrize(
    ("unit", "header"),
    [(3, 17), (1, 5)],
    ids=["the-last-unit-reads-short", "the-start-is-no-record-start"],
)
def test_a_rewrite_that_breaks_the_unit_is_reported_as_a_changed_input(
    tmp_path: Path, unit: int, header: int
) -> None:
    """A header of the unit is now sequence: reading it breaks; the reason given is
    the changed input, not only where the reading broke."""
    path = copy_example(tmp_path)
    assign = unit_assign(path, unit)
    rewrite(path, list(read_records(path))[header].offset, b"A")

    got, changed, _ = read_feed(assign)

    assert changed is not None
    assert "input changed since submission" in str(changed)
    assert len(got) < 5


def test_a_unit_planned_without_a_digest_is_not_checked(tmp_path: Path) -> None:
    """Units planned by an older virnuc carry no digest: nothing to compare with."""
    path = copy_example(tmp_path)
    assign = unit_assign(path, 1, resume_at=6, unit_end_offset=None, digest=None)
    rewrite(path, sequence_byte(path, 9))

    got, changed, feed = read_feed(assign)

    assert changed is None
    assert feed.failure is None
    assert [r.index for r in got] == [6, 7, 8, 9]


# --- the assign message ------------------------------------------------------------------


def test_assign_carries_the_units_range_and_digest_and_old_assigns_stay_valid(
    tmp_path: Path,
) -> None:
    assign = unit_assign(copy_example(tmp_path), 1, resume_at=7)
    assert decode_from_daemon(assign.encode()) == assign
    old = dataclasses.replace(assign, unit_offset=None, unit_end_offset=None, digest=None)
    wire = old.to_wire()
    assert not {"unit_offset", "unit_end_offset", "digest"} & set(wire)
    assert decode_from_daemon(old.encode()) == old


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"digest": "ABC"}, "field 'digest' must be 32 lowercase hex digits"),
        ({"digest": "0" * 64}, "field 'digest' must be 32 lowercase hex digits"),
        ({"unit_end_offset": None}, "field 'digest' needs unit_offset and unit_end_offset"),
        ({"unit_offset": 10**6}, "field 'unit_offset' must be at most start_offset"),
        ({"unit_end_offset": 1}, "field 'unit_end_offset' must be above start_offset"),
        ({"unit_offset": -1}, "field 'unit_offset' must be a non-negative int"),
    ],
)
def test_assign_refuses_a_bad_unit_range_or_digest(
    tmp_path: Path, changes: dict[str, Any], problem: str
) -> None:
    wire = unit_assign(copy_example(tmp_path), 1, resume_at=7).to_wire()
    wire.update(changes)
    with pytest.raises(ProtocolError, match=problem):
        decode_from_daemon(codec.encode({k: v for k, v in wire.items() if v is not None}))


def test_assign_takes_a_gzip_index_only_with_its_size_and_sha256(tmp_path: Path) -> None:
    named = unit_assign(
        copy_example(tmp_path, gz=True),
        0,
        gzip_index="/jobs/j/input-0.gzidx",
        gzip_index_size=10,
        gzip_index_sha256="0" * 64,
    )
    assert decode_from_daemon(named.encode()) == named
    with pytest.raises(ProtocolError, match="go together"):
        dataclasses.replace(named, gzip_index_sha256=None)
