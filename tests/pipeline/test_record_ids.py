"""pipeline/record_ids.py: record ids unique across all of a job's input files."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from virnuc.pipeline import record_ids
from virnuc.pipeline.fasta import FastaError
from virnuc.pipeline.inputs import scan_inputs

from tests.support.inputs import write


def test_ids_must_be_unique_across_files_and_the_error_names_both(tmp_path: Path) -> None:
    fasta = write(tmp_path, b">a\nACGT\n>shared x\nACGT\n", "one.fa")
    fastq = write(tmp_path, b"@b\nAC\n+\nII\n@shared\nAC\n+\nII\n", "two.fq.gz")

    with pytest.raises(FastaError) as raised:
        scan_inputs([fasta, fastq])

    message = str(raised.value)
    assert message.startswith(f"{fastq}, line 5: duplicate record id 'shared' ")
    assert f"(first in {fasta}, line 3)" in message
    assert "in the job's inputs" in message


def many_records(tmp_path: Path, name: str, ids: list[str]) -> Path:
    return write(tmp_path, b"".join(f">{rid}\nACGT\n".encode() for rid in ids), name)


@pytest.fixture
def small_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hashes spill to disk every 7 records, into a temp dir of the test's own."""
    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(record_ids, "CHUNK", 7)
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    return spill


def test_a_duplicate_among_spilled_hashes_is_found_and_named_exactly(
    tmp_path: Path, small_chunks: Path
) -> None:
    first = many_records(tmp_path, "one.fa", [f"r{i}" for i in range(100)])
    second = many_records(tmp_path, "two.fa", [f"s{i}" for i in range(50)] + ["r3"])
    with pytest.raises(FastaError) as raised:
        scan_inputs([first, second])
    message = str(raised.value)
    assert message.startswith(f"{second}, line 101: duplicate record id 'r3' ")
    assert f"(first in {first}, line 7)" in message
    assert list(small_chunks.iterdir()) == []  # the spill files are gone


def test_unique_ids_that_spilled_raise_nothing_and_leave_no_files(
    tmp_path: Path, small_chunks: Path
) -> None:
    files = [many_records(tmp_path, f"{n}.fa", [f"{n}-{i}" for i in range(60)]) for n in "abc"]
    scans = scan_inputs(files)
    assert [scan.records for scan in scans] == [60, 60, 60]
    assert list(small_chunks.iterdir()) == []


def test_memory_holds_at_most_one_chunk_of_hashes(small_chunks: Path) -> None:
    hashes = record_ids.IdHashes()
    for value in range(1000):
        hashes.append(record_ids.id_hash(str(value)))
        assert len(hashes.in_memory()) < 7
    assert len(hashes) == 1000
    assert hashes.spilled
    hashes.close()
    assert list(small_chunks.iterdir()) == []
