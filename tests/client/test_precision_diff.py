"""The comparison of an fp32 run with a reduced-precision run: two tables in, agreement,
score differences and the changed records out (client/precision_diff.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virnuc.client.precision_diff import (
    ChangedRecord,
    ComparisonError,
    compare_output_dirs,
    compare_runs,
)
from virnuc.pipeline.output_format import PREDICTIONS_HEADER, SUMMARY_HEADER


def _summary(*rows: tuple[str, str, str]) -> list[dict[str, str]]:
    return [{"record_id": r, "call": call, "max_virus_score": score} for r, call, score in rows]


def _frames(*rows: tuple[str, str, float]) -> list[dict[str, str]]:
    return [
        {"Sequence_ID": i, "Prediction": p, "score1": str(1 - s), "score2": str(s)}
        for i, p, s in rows
    ]


SUMMARY = _summary(("a", "virus", "0.9"), ("b", "others", "0.2"), ("c", "no_frames", "NA"))
FRAMES = _frames(("a_F1", "virus", 0.9), ("b_F1", "others", 0.2), ("b_R1", "others", 0.1))


def test_identical_runs_agree_completely() -> None:
    result = compare_runs("bf16", SUMMARY, SUMMARY, FRAMES, FRAMES)
    assert (result.records, result.records_agree, result.record_agreement) == (3, 3, 1.0)
    assert (result.frames, result.frames_agree, result.frame_agreement) == (3, 3, 1.0)
    assert result.max_score_diff == result.median_score_diff == result.max_record_score_diff == 0
    assert result.changed == []


def test_a_flipped_record_is_reported_with_both_calls_and_scores() -> None:
    reduced = _summary(("a", "virus", "0.89"), ("b", "virus", "0.51"), ("c", "no_frames", "NA"))
    frames = _frames(("a_F1", "virus", 0.89), ("b_F1", "virus", 0.51), ("b_R1", "others", 0.1))
    result = compare_runs("bf16", SUMMARY, reduced, FRAMES, frames)
    assert result.changed == [ChangedRecord("b", "others", 0.2, "virus", 0.51)]
    assert (result.records_agree, result.frames_agree) == (2, 2)
    assert result.max_score_diff == pytest.approx(0.31)
    assert result.median_score_diff == pytest.approx(0.01)
    assert result.max_record_score_diff == pytest.approx(0.31)


def test_runs_of_different_records_or_frames_cannot_be_compared() -> None:
    with pytest.raises(ComparisonError, match="row 2: 'b' against 'x'"):
        compare_runs("bf16", SUMMARY, _summary(("a", "virus", "1"), ("x", "virus", "1")), [], [])
    with pytest.raises(ComparisonError, match="row 3: 'b_R1' against no row"):
        compare_runs("bf16", [], [], FRAMES, FRAMES[:2])


def test_nothing_scored_is_full_agreement_not_a_division_by_zero() -> None:
    result = compare_runs("tf32", [], [], [], [])
    assert (result.record_agreement, result.frame_agreement) == (1.0, 1.0)


def test_the_json_form_has_every_figure() -> None:
    reduced = _summary(("a", "others", "0.4"), ("b", "others", "0.2"), ("c", "no_frames", "NA"))
    data = json.loads(json.dumps(compare_runs("bf16", SUMMARY, reduced, FRAMES, FRAMES).as_dict()))
    assert set(data) == {
        "precision", "records", "records_agree", "record_agreement", "frames",
        "frames_agree", "frame_agreement", "max_score_diff", "median_score_diff",
        "max_record_score_diff", "changed",
    }  # fmt: skip
    assert data["changed"] == [
        {"id": "a", "fp32_call": "virus", "fp32_score": 0.9, "reduced_call": "others",
         "reduced_score": 0.4}
    ]  # fmt: skip


def _write_run(out: Path, summary: list[dict[str, str]], frames: list[dict[str, str]]) -> None:
    out.mkdir()
    columns = SUMMARY_HEADER.rstrip("\n").split("\t")
    lines = ["\t".join(row.get(c, "") for c in columns) for row in summary]
    (out / "sequence_summary.tsv").write_text(SUMMARY_HEADER + "".join(x + "\n" for x in lines))
    rows = [f"{r['Sequence_ID']}\t{r['Prediction']}\t{r['score1']}\t{r['score2']}" for r in frames]
    (out / "prediction_results.txt").write_text(
        PREDICTIONS_HEADER + "".join(x + "\n" for x in rows)
    )


def test_output_directories_are_read_by_their_headers(tmp_path: Path) -> None:
    _write_run(tmp_path / "fp32", SUMMARY, FRAMES)
    flipped = _summary(("a", "others", "0.4"), ("b", "others", "0.2"), ("c", "no_frames", "NA"))
    _write_run(tmp_path / "bf16", flipped, FRAMES)
    result = compare_output_dirs("bf16", tmp_path / "fp32", tmp_path / "bf16")
    assert result.changed == [ChangedRecord("a", "virus", 0.9, "others", 0.4)]
    assert result.frames == 3
