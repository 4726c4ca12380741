"""pipeline/report_scan.py: the report's one pass over summary.tsv and predictions.tsv."""

from __future__ import annotations

from pathlib import Path

from virnuc.pipeline.output_format import PREDICTIONS, SUMMARY
from virnuc.pipeline.report_scan import ReportSummary, chunk_details, scan_summary

from tests.support.report_outputs import record, write_outputs


def test_chunk_spans_follow_the_chunking(tmp_path: Path) -> None:
    write_outputs(tmp_path, [record(0, 0.9, length=1000)])
    entries = scan_summary(tmp_path / SUMMARY, 1, ReportSummary(tmp_path, tmp_path, tmp_path), None)
    details = chunk_details(tmp_path / PREDICTIONS, entries, 300)
    spans = [(c.start, c.end, c.is_virus) for c in details["rec0"]]
    assert spans == [(0, 300, True), (249, 549, False), (498, 798, False), (747, 1000, False)]
