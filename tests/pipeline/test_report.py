"""prediction.png and report.html: top records in order, inline images, bounded state."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from virnuc.client.cli import EXIT_INVALID_INPUT, EXIT_OK, main
from virnuc.pipeline.output_format import PREDICTIONS, PREDICTIONS_HEADER, SUMMARY, SUMMARY_HEADER
from virnuc.pipeline.outputs import RecordResult
from virnuc.pipeline.report import PLOT, REPORT, ReportError, write_report
from virnuc.pipeline.report_scan import BINS

from tests.support.report_outputs import record, write_outputs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_of_real_outputs(tmp_path: Path) -> None:
    scores = [0.2, 0.95, 0.5, 0.99, 0.1, 0.7, 0.95]
    results = [record(i, p) for i, p in enumerate(scores)]
    results.append(RecordResult("empty", 2, 1, [], np.zeros((0, 2), np.float32)))
    write_outputs(tmp_path, results)

    summary = write_report(tmp_path, top=4, run_info={"precision": "fp32", "time": 3.25})

    png = (tmp_path / PLOT).read_bytes()
    assert png.startswith(PNG_MAGIC)
    assert 5_000 < len(png) < 5_000_000
    assert summary.records == 8
    assert summary.calls == {"others": 2, "virus": 5, "no_frames": 1}  # 0.5: a tie is virus
    assert sum(summary.histogram) + summary.unscored == summary.records
    assert summary.unscored == 1
    assert len(summary.histogram) == BINS
    # ties keep input order: rec1 before rec6 (both 0.95)
    expected = ["rec3", "rec1", "rec6", "rec5"]
    assert [t.record_id for t in summary.top] == expected
    assert summary.chunk_length == 300
    assert summary.details_kept == 4

    page = (tmp_path / REPORT).read_text()
    positions = [page.index(f"<td>{rid}</td>") for rid in expected]
    assert positions == sorted(positions)
    assert "<td>rec0</td>" not in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 2
    assert "http://" not in page
    assert "https://" not in page
    assert "fp32" in page
    assert "3.2 s" in page
    assert "not recorded" in page  # inputs, models
    assert not list(tmp_path.glob(".*.partial"))


def _write_synthetic(out: Path, n: int) -> None:
    """`n` records in the writer's exact format (the real writer is too slow for 200k)."""
    rng = np.random.default_rng(1)
    p = rng.random(n).astype(np.float32)
    with (
        (out / PREDICTIONS).open("w") as pred,
        (out / SUMMARY).open("w") as summ,
    ):
        pred.write(PREDICTIONS_HEADER)
        summ.write(SUMMARY_HEADER)
        for i in range(n):
            s, o = str(p[i]), str(np.float32(1 - p[i]))
            call = "virus" if p[i] >= 0.5 else "others"
            pred.write(f"r{i}_chunk_1F1\t{call}\t{o}\t{s}\n")
            summ.write(f"r{i}\t250\t1\t1\t{int(call == 'virus')}\t{s}\t{call}\t/in.fa\n")


@pytest.mark.slow
def test_bounded_state_on_200k_records(tmp_path: Path) -> None:
    n, top = 200_000, 5
    _write_synthetic(tmp_path, n)
    summary = write_report(tmp_path, top=top)
    assert summary.records == n
    assert sum(summary.histogram) == n
    assert summary.peak_held <= top
    assert summary.details_kept == top
    assert [t.max_virus_score for t in summary.top] == sorted(
        (t.max_virus_score for t in summary.top), reverse=True
    )


def test_disagreeing_files_are_refused(tmp_path: Path) -> None:
    write_outputs(tmp_path, [record(0, 0.9), record(1, 0.8)])
    pred = tmp_path / PREDICTIONS
    pred.write_text("".join(pred.read_text().splitlines(keepends=True)[:3]))
    with pytest.raises(ReportError, match="disagree"):
        write_report(tmp_path, top=2)


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == EXIT_INVALID_INPUT
    assert "no complete outputs" in capsys.readouterr().err
    write_outputs(tmp_path / "out", [record(0, 0.9), record(1, 0.2)])
    assert main(["report", str(tmp_path / "out"), "--top", "1", "--json"]) == EXIT_OK
    assert '"rec0"' in capsys.readouterr().out
    assert (tmp_path / "out" / REPORT).is_file()
