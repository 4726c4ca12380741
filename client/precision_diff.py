"""How far a reduced-precision run's calls and scores are from an fp32 run's.

Pure and pipeline-independent: two runs' tables in (rows of `sequence_summary.tsv`
and of `prediction_results.txt`, as dicts by column name), a `Comparison` out;
`compare_output_dirs` reads the two output directories. Both runs scored the same
input, so their tables hold the same records and frames in the same order (frames are
chosen by the sequence alone, never by the models); anything else is an error, not a
difference to report.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

from virnuc.pipeline.output_format import PREDICTIONS, SUMMARY

Row = Mapping[str, str]


class ComparisonError(ValueError):
    """The two runs' tables do not describe the same records and frames."""


@dataclass(frozen=True, slots=True)
class ChangedRecord:
    """A record whose call differs: each run's call and max virus score (None: NA)."""

    id: str
    fp32_call: str
    fp32_score: float | None
    reduced_call: str
    reduced_score: float | None


@dataclass(slots=True)
class Comparison:
    precision: str  # the reduced one: bf16 or tf32
    records: int = 0
    records_agree: int = 0
    frames: int = 0
    frames_agree: int = 0
    max_score_diff: float = 0.0  # over frames, |score2 (P(virus)) fp32 - reduced|
    median_score_diff: float = 0.0
    max_record_score_diff: float = 0.0  # over records, |max_virus_score fp32 - reduced|
    changed: list[ChangedRecord] = field(default_factory=list)

    @property
    def record_agreement(self) -> float:
        """Fraction of records with the same call (1.0 for no records: nothing differs)."""
        return self.records_agree / self.records if self.records else 1.0

    @property
    def frame_agreement(self) -> float:
        return self.frames_agree / self.frames if self.frames else 1.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["record_agreement"] = self.record_agreement
        data["frame_agreement"] = self.frame_agreement
        return data


def compare_runs(
    precision: str,
    fp32_summary: Iterable[Row],
    reduced_summary: Iterable[Row],
    fp32_frames: Iterable[Row],
    reduced_frames: Iterable[Row],
) -> Comparison:
    """Compare two runs of one input: records by `call`, frames by `Prediction`."""
    result = Comparison(precision)
    _compare_records(result, fp32_summary, reduced_summary)
    _compare_frames(result, fp32_frames, reduced_frames)
    return result


def _compare_records(result: Comparison, fp32: Iterable[Row], reduced: Iterable[Row]) -> None:
    for n, (a, b) in enumerate(_paired(fp32, reduced, "record_id", SUMMARY), start=1):
        result.records = n
        score_a, score_b = _score(a["max_virus_score"]), _score(b["max_virus_score"])
        if score_a is not None and score_b is not None:
            diff = abs(score_a - score_b)
            result.max_record_score_diff = max(result.max_record_score_diff, diff)
        if a["call"] == b["call"]:
            result.records_agree += 1
        else:
            result.changed.append(
                ChangedRecord(a["record_id"], a["call"], score_a, b["call"], score_b)
            )


def _compare_frames(result: Comparison, fp32: Iterable[Row], reduced: Iterable[Row]) -> None:
    diffs = []
    for a, b in _paired(fp32, reduced, "Sequence_ID", PREDICTIONS):
        diffs.append(abs(float(a["score2"]) - float(b["score2"])))
        result.frames_agree += a["Prediction"] == b["Prediction"]
    result.frames = len(diffs)
    if diffs:
        result.max_score_diff = max(diffs)
        result.median_score_diff = statistics.median(diffs)


def _paired(a: Iterable[Row], b: Iterable[Row], key: str, table: str) -> Iterator[tuple[Row, Row]]:
    """Rows of the two tables side by side; raises where they stop describing the same
    thing (a different id, or one table longer)."""
    for n, (row_a, row_b) in enumerate(zip_longest(a, b), start=1):
        if row_a is None or row_b is None or row_a[key] != row_b[key]:
            raise ComparisonError(
                f"{table} differs between the runs at row {n}: "
                f"{_describe(row_a, key)} against {_describe(row_b, key)}"
            )
        yield row_a, row_b


def _describe(row: Row | None, key: str) -> str:
    return "no row" if row is None else repr(row[key])


def _score(text: str) -> float | None:
    return None if text == "NA" else float(text)


def read_table(path: Path) -> Iterator[dict[str, str]]:
    """A tab-separated output table's rows, by its header's column names."""
    with path.open(newline="") as handle:
        yield from csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)


def compare_output_dirs(precision: str, fp32_dir: Path, reduced_dir: Path) -> Comparison:
    """Compare the outputs of two complete runs (their `--out` directories)."""
    return compare_runs(
        precision,
        read_table(fp32_dir / SUMMARY),
        read_table(reduced_dir / SUMMARY),
        read_table(fp32_dir / PREDICTIONS),
        read_table(reduced_dir / PREDICTIONS),
    )
