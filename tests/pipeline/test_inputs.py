"""pipeline/inputs.py: a job's input files, FASTA or FASTQ, read in order as one record stream."""

from __future__ import annotations

from pathlib import Path

from virnuc.pipeline.inputs import read_job_records, scan_inputs

from tests.support.inputs import FASTQ, write


def test_a_job_reads_its_files_in_order_with_indices_across_them(tmp_path: Path) -> None:
    fasta = write(tmp_path, b">a\nACGT\n>b\nACGT\n", "one.fa")
    fastq = write(tmp_path, FASTQ, "two.fq")

    assert [s.records for s in scan_inputs([fasta, fastq])] == [2, 3]
    got = [(src, r.index, r.id) for src, r in read_job_records([str(fasta), str(fastq)])]
    assert got == [
        (str(fasta), 0, "a"),
        (str(fasta), 1, "b"),
        (str(fastq), 2, "r1"),
        (str(fastq), 3, "r2"),
        (str(fastq), 4, "r3"),
    ]
