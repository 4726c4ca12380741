"""pipeline/run.py: one whole prediction in this process, inputs to output files."""

from __future__ import annotations

from pathlib import Path

from virnuc.pipeline.outputs import PREDICTIONS, SUMMARY
from virnuc.pipeline.run import predict_file

EXAMPLE = Path(__file__).parents[2] / "examples" / "example.fasta"


def test_predict_file_writes_one_summary_row_per_record(demo_models, tmp_path: Path) -> None:
    done = predict_file(demo_models, EXAMPLE, tmp_path)
    assert done.records_done == done.records_total == 20
    summary = (tmp_path / SUMMARY).read_text().splitlines()
    assert [row.split("\t")[0] for row in summary[1:]] == [f"contig_{i:05d}" for i in range(1, 21)]
    assert len((tmp_path / PREDICTIONS).read_text().splitlines()) == done.frames_done + 1
