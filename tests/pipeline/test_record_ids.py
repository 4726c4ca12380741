"""pipeline/record_ids.py: record ids unique across all of a job's input files."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
import pytest

from virnuc.pipeline import record_ids
from virnuc.pipeline.fasta import FastaError
from virnuc.pipeline.inputs import scan_inputs

from tests.support.inputs import write
from tests.support.seeds import seed


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


def test_a_block_s_ids_hash_as_each_id_alone() -> None:
    """The numpy path (many ids, short and long, more than one matrix step) agrees
    with `id_hash`, the hash of one id."""
    rng = random.Random(seed(23))
    ids = [b"r%d" % i for i in range(5000)] + [b"x" * n for n in (63, 64, 65, 200, 5000)]
    ids += [
        bytes(rng.choice(b"ACGT_/:.0123456789") for _ in range(rng.randint(1, 90)))
        for _ in range(500)
    ]
    data = b"".join(ids)
    ends = np.cumsum([len(i) for i in ids])

    hashes = record_ids.hash_spans(
        np.frombuffer(data, np.uint8), ends - [len(i) for i in ids], ends
    )

    assert hashes.tolist() == [record_ids.id_hash(i.decode()) for i in ids]


def test_ids_that_differ_hash_apart_and_fill_every_bucket() -> None:
    ids = [b"read_%09d/1" % i for i in range(100_000)] + [
        b"read_%09d/2" % i for i in range(100_000)
    ]
    hashes = record_ids.hash_ids(ids)

    assert len(set(hashes.tolist())) == len(ids)
    buckets = np.bincount(record_ids._bucket_of(hashes), minlength=record_ids.BUCKETS)
    expected = len(ids) / record_ids.BUCKETS
    assert buckets.min() > 0.8 * expected
    assert buckets.max() < 1.2 * expected


def test_ids_added_one_by_one_hash_as_a_block_s_in_their_order() -> None:
    ids = [f"r{i}" for i in range(10_000)]
    one_by_one, together = record_ids.IdHashes(), record_ids.IdHashes()
    for rid in ids[:5000]:
        one_by_one.add_id(rid)
    one_by_one.append(record_ids.id_hash(ids[5000]))
    for rid in ids[5001:]:
        one_by_one.add_id(rid)
    together.extend(record_ids.hash_ids([i.encode() for i in ids]))

    assert len(one_by_one) == len(ids)
    assert one_by_one.in_memory().tolist() == together.in_memory().tolist()
