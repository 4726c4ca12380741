"""pipeline/record_ids.py: record ids unique across all of a job's input files."""

from __future__ import annotations

from pathlib import Path

import pytest

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
