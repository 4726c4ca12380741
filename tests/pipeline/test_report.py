"""prediction.png and report.html: top records in order, inline images, bounded state."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from virnuc.client.cli import EXIT_INVALID_INPUT, EXIT_OK, main
from virnuc.pipeline.output_format import (
    PREDICTIONS,
    PREDICTIONS_HEADER,
    RUN_INFO,
    SUMMARY,
    SUMMARY_HEADER,
)
from virnuc.pipeline.outputs import RecordResult, ResultWriter
from virnuc.pipeline.report import PLOT, REPORT, ReportError, write_report
from virnuc.pipeline.report_figures import histogram_figure
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
            summ.write(f"r{i}\t250\t1\t1\t{int(call == 'virus')}\t{s}\t{call}\t/in.fa\t\n")


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


def _frames(record_id: str, pairs: list[tuple[float, float]]) -> RecordResult:
    """One 250-base chunk of `record_id` with a frame per (P(others), P(virus))."""
    ids = [f"{record_id}_chunk_1F{k + 1}" for k in range(len(pairs))]
    return RecordResult(record_id, 250, 1, ids, np.array(pairs, np.float32))


def test_ranking_never_puts_an_others_call_above_a_virus_call(tmp_path: Path) -> None:
    # "contested": a frame at P(virus) 0.524, but another frame of its only chunk is
    # more sure it is others (0.6): called others. "narrow": 0.501 vs 0.499: virus.
    contested = _frames("contested", [(0.476, 0.524), (0.6, 0.4)])
    narrow = _frames("narrow", [(0.499, 0.501)])
    write_outputs(tmp_path, [record(0, 0.9), contested, narrow, record(1, 0.2)])

    summary = write_report(tmp_path, top=4)

    assert [(t.record_id, t.call) for t in summary.top] == [
        ("rec0", "virus"),
        ("narrow", "virus"),
        ("contested", "others"),
        ("rec1", "others"),
    ]
    calls = [t.call for t in summary.top]
    assert calls == sorted(calls, key=lambda call: call != "virus")  # no virus under others
    page = (tmp_path / REPORT).read_text()
    assert page.index("<td>narrow</td>") < page.index("<td>contested</td>")
    assert "ranked first" in page  # the rule is stated where the table is


def test_the_page_says_how_to_read_it(tmp_path: Path) -> None:
    write_outputs(tmp_path, [record(0, 0.9)])
    write_report(tmp_path)
    page = (tmp_path / REPORT).read_text()
    assert "How to read this report" in page
    for term in ("Chunk.", "Frame.", "score1 and score2.", "Record call.", "no_frames"):
        assert term in page, term
    assert "at least its highest score1" in page  # the chunk's call rule
    assert "of 300 bases" in page  # the chunk length, inferred from the records
    assert "DEMO MODELS" not in page


def test_demo_models_get_a_banner(tmp_path: Path) -> None:
    write_outputs(tmp_path, [record(0, 0.9)])
    write_report(tmp_path, run_info={"profile": "demo"})
    assert 'class="banner">DEMO MODELS' in (tmp_path / REPORT).read_text()


def test_a_run_with_nothing_scored_gets_an_honest_page(tmp_path: Path) -> None:
    empty = [RecordResult(f"r{i}", 20, 1, [], np.zeros((0, 2), np.float32)) for i in range(3)]
    write_outputs(tmp_path, empty)

    summary = write_report(tmp_path)

    assert summary.top == []
    assert summary.unscored == 3
    page = (tmp_path / REPORT).read_text()
    assert "No record has a scored frame" in page
    assert "3 of 3 records" in page
    assert "top 0" not in page
    assert "Best-ranked records" not in page
    assert "<img" not in page  # no empty histogram, no empty panel


def test_the_report_counts_each_warning(tmp_path: Path) -> None:
    short = RecordResult("short", 100, 1, [], np.zeros((0, 2), np.float32), n_bases=80)
    with ResultWriter(tmp_path, chunk_length=300) as writer:
        for result in (record(0, 0.9), short):
            writer.write(result)
        writer.commit()

    summary = write_report(tmp_path)

    assert summary.warnings == {"no_frames": 1, "shorter_than_chunk": 1, "mostly_N": 1}
    page = (tmp_path / REPORT).read_text()
    assert "<td>Records with warning mostly_N</td><td>1</td>" in page


def test_a_summary_without_the_warnings_column_is_still_read(tmp_path: Path) -> None:
    write_outputs(tmp_path, [record(0, 0.9)])
    summary_file = tmp_path / SUMMARY
    rows = summary_file.read_text().splitlines()
    summary_file.write_text("".join(row.rsplit("\t", 1)[0] + "\n" for row in rows))

    summary = write_report(tmp_path)

    assert summary.records == 1
    assert summary.warnings is None
    assert "not recorded (a summary without warnings)" in (tmp_path / REPORT).read_text()


def test_virnucctl_report_shows_the_directory_s_run_info_json(tmp_path: Path) -> None:
    write_outputs(tmp_path, [record(0, 0.9)])
    info = {
        "virnuc_version": "9.9.9",
        "demo_models": True,
        "models": {
            "classifier": {
                "given": "demo profile (demo-v2, tiny random models)",
                "files": [{"path": "demo-v2/classifier.pth", "size": 1234, "sha256": "ab" * 32}],
            }
        },
    }
    (tmp_path / RUN_INFO).write_text(json.dumps(info))

    write_report(tmp_path)  # as `virnucctl report DIR` calls it: no run_info given

    page = (tmp_path / REPORT).read_text()
    assert "9.9.9" in page
    assert "DEMO MODELS" in page
    assert "<td>demo-v2/classifier.pth</td><td>1,234 B</td><td>" + "ab" * 32 in page


@pytest.mark.parametrize("counts", [[0] * BINS, [3] + [0] * (BINS - 1)])
def test_the_histogram_never_has_a_negative_axis(counts: list[int]) -> None:
    (axes,) = histogram_figure(counts).axes
    assert axes.get_ylim()[0] >= 0
