"""The sample `virnucctl compare-precision` scores: uniform, reproducible by seed, the
records intact (FASTA or FASTQ, plain or gzip, RNA read as DNA), bad input named by
file and line, and written 0600."""

from __future__ import annotations

import gzip
import random
import stat
from collections import Counter
from pathlib import Path

import pytest

from virnuc.client.sample_input import sample_records, write_fasta
from virnuc.pipeline.fasta import FastaError
from virnuc.pipeline.inputs import read_records

from tests.support.inputs import FASTQ, write


def _fasta(path: Path, count: int, seed: int = 3) -> dict[str, str]:
    """`count` records of random length and letters; their sequences by id."""
    rng = random.Random(seed)
    sequences = {f"r{i}": "".join(rng.choices("ACGT", k=rng.randint(1, 150))) for i in range(count)}
    with path.open("w") as out:
        for record_id, sequence in sequences.items():
            out.write(f">{record_id} description\n")
            for start in range(0, len(sequence), 70):
                out.write(sequence[start : start + 70] + "\n")
    return sequences


def test_an_input_of_at_most_n_records_is_taken_whole_in_input_order(tmp_path: Path) -> None:
    sequences = _fasta(tmp_path / "in.fa", 40)
    sample = sample_records(tmp_path / "in.fa", 40, seed=1)
    assert sample.total == 40
    assert [(r.id, r.sequence) for r in sample.records] == list(sequences.items())
    assert [r.index for r in sample.records] == list(range(40))


def test_sampled_records_are_the_input_records_intact_in_input_order(tmp_path: Path) -> None:
    sequences = _fasta(tmp_path / "in.fa", 5000)
    sample = sample_records(tmp_path / "in.fa", 100, seed=1)
    assert sample.total == 5000
    assert len(sample.records) == 100
    assert len({r.id for r in sample.records}) == 100
    assert all(r.sequence == sequences[r.id] for r in sample.records)
    assert [r.index for r in sample.records] == sorted(r.index for r in sample.records)
    assert all(r.id == f"r{r.index}" for r in sample.records)


def test_the_same_seed_gives_the_same_sample_and_another_seed_another(tmp_path: Path) -> None:
    _fasta(tmp_path / "in.fa", 3000)
    first = sample_records(tmp_path / "in.fa", 50, seed=7)
    assert sample_records(tmp_path / "in.fa", 50, seed=7) == first
    assert sample_records(tmp_path / "in.fa", 50, seed=8) != first


def test_every_part_of_the_input_is_sampled_as_often(tmp_path: Path) -> None:
    """Over 200 seeds, each tenth of a 2,000-record file holds about a tenth of the
    picks (records early and late: Algorithm L's skips are not biased to either end)."""
    _fasta(tmp_path / "in.fa", 2000)
    tenths: Counter[int] = Counter()
    firsts: Counter[int] = Counter()
    for seed in range(200):
        records = sample_records(tmp_path / "in.fa", 20, seed).records
        tenths.update(r.index // 200 for r in records)
        firsts[records[0].index < 100] += 1
    expected = 200 * 20 / 10
    assert all(abs(tenths[t] - expected) < 0.15 * expected for t in range(10)), tenths
    # P(some pick among the first 5 %) = 1 - 0.95^20 = 0.64
    assert 0.5 < firsts[True] / 200 < 0.78


def test_records_longer_than_a_read_block_are_sampled_whole(tmp_path: Path) -> None:
    """A record spanning several 2 MiB blocks of the validating pass."""
    rng = random.Random(5)
    long = "".join(rng.choices("ACGT", k=5_000_000))
    path = tmp_path / "long.fa"
    path.write_text(f">a\nACGT\n>big\n{long}\n>c\nGG\n")
    sample = sample_records(path, 3, seed=1)
    assert [(r.id, len(r.sequence)) for r in sample.records] == [
        ("a", 4),
        ("big", 5_000_000),
        ("c", 2),
    ]
    assert sample.records[1].sequence == long


@pytest.mark.parametrize("name", ["reads.fq", "reads.fq.gz"])
def test_fastq_plain_or_gzip_gives_the_records_a_job_reads(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, FASTQ, name)
    sample = sample_records(path, 10, seed=1)
    expected = [(r.id, r.sequence) for r in read_records(path)]
    assert [(r.id, r.sequence) for r in sample.records] == expected


def test_rna_is_read_as_dna(tmp_path: Path) -> None:
    path = tmp_path / "rna.fa.gz"
    path.write_bytes(gzip.compress(b">x\nACGUuu\n"))
    assert sample_records(path, 5, seed=1).records[0].sequence == "ACGTtt"


def test_bad_input_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.fa"
    path.write_text(">a\nACGT\n>b\nACXJ\n")
    with pytest.raises(FastaError) as caught:
        sample_records(path, 10, seed=1)
    assert f"{path}, line 4" in str(caught.value)


def test_a_repeated_id_is_refused_as_a_job_would(tmp_path: Path) -> None:
    path = tmp_path / "dup.fa"
    path.write_text(">a\nACGT\n>b\nAC\n>a\nGG\n")
    with pytest.raises(FastaError, match="'a'"):
        sample_records(path, 1, seed=1)


def test_the_sample_file_is_private(tmp_path: Path) -> None:
    sequences = _fasta(tmp_path / "in.fa", 30)
    sample = sample_records(tmp_path / "in.fa", 10, seed=2)
    out = tmp_path / "sample.fa"
    write_fasta(sample.records, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    written = [(r.id, r.sequence) for r in read_records(out)]
    assert written == [(r.id, sequences[r.id]) for r in sample.records]
