"""Reading a complete output directory for the report, in two bounded streaming passes.

1. `sequence_summary.tsv`, one row per record: totals (records, frames, chunks, calls
   per label), the histogram's counts, and a heap of the `top` best records. Each heap
   entry remembers its record's first row in `prediction_results.txt` (the sum of
   `frames_scored` before it: both files are in input order).
2. `prediction_results.txt`, skipped through line by line (no parsing) to those rows
   only, stopping after the last one: the chunk scores of the top records alone.

So at most `top` records' details are held (`ReportSummary.peak_held`,
`details_kept`), whatever the size of the run.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from .frames import chunk_starts
from .output_format import (
    LABELS,
    PREDICTIONS,
    PREDICTIONS_HEADER,
    SUMMARY,
    SUMMARY_HEADER,
    SUMMARY_HEADER_V1,
    SUMMARY_HEADER_V2,
)
from .spec import CHUNK_LENGTHS  # VirNucPro's two models

BINS = 50


class ReportError(ValueError):
    """The directory holds no complete outputs, or they cannot be read as ours."""


@dataclass(frozen=True, slots=True)
class TopRecord:
    """One of the best records, as its `sequence_summary.tsv` row says."""

    rank: int
    record_id: str
    length: int
    chunks: int
    frames_scored: int
    chunks_virus: int
    max_virus_score: float
    call: str


@dataclass(frozen=True, slots=True)
class ChunkCall:
    """One chunk with rows: its span on the record and its highest scores."""

    number: int  # 1-based, as in `_chunk_N`
    start: int
    end: int
    max_others: float
    max_virus: float

    @property
    def is_virus(self) -> bool:
        return self.max_virus >= self.max_others  # the highest-score file's rule

    @property
    def score(self) -> float:
        """The called class's score: the height of the chunk's segment."""
        return max(self.max_virus, self.max_others)


@dataclass(slots=True)
class ReportSummary:
    """What `write_report` found and wrote."""

    out_dir: Path
    plot: Path
    report: Path
    records: int = 0
    frames: int = 0
    chunks: int = 0
    chunks_virus: int = 0
    calls: dict[str, int] = field(default_factory=dict)  # virus / others / no_frames
    warnings: dict[str, int] | None = None  # records per warning; None: an older layout
    histogram: list[int] = field(default_factory=lambda: [0] * BINS)  # per-record max P(virus)
    unscored: int = 0  # records with no max P(virus) (no frames, or NaN)
    chunk_length: int | None = None  # None: not known, estimated per record
    top: list[TopRecord] = field(default_factory=list)
    peak_held: int = 0  # the most records the first pass ever held at once
    details_kept: int = 0  # records whose chunk scores the second pass kept
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "plot": str(self.plot),
            "report": str(self.report),
            "records": self.records,
            "frames": self.frames,
            "chunks": self.chunks,
            "chunks_virus": self.chunks_virus,
            "calls": dict(self.calls),
            "warnings": None if self.warnings is None else dict(self.warnings),
            "histogram": list(self.histogram),
            "unscored": self.unscored,
            "chunk_length": self.chunk_length,
            "top": [
                {
                    "rank": t.rank,
                    "record_id": t.record_id,
                    "length": t.length,
                    "chunks": t.chunks,
                    "frames_scored": t.frames_scored,
                    "chunks_virus": t.chunks_virus,
                    "max_virus_score": t.max_virus_score,
                    "call": t.call,
                }
                for t in self.top
            ],
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class SummaryEntry:
    """One of the best records so far, as pass 1 found it in `sequence_summary.tsv`."""

    record_id: str
    length: int
    chunks: int
    frames: int
    chunks_virus: int
    score: float
    call: str
    row: int  # its first data row in prediction_results.txt
    index: int  # input order, for ties


# --- pass 1: sequence_summary.tsv ------------------------------------------------------


def scan_summary(
    path: Path, top: int, summary: ReportSummary, given_length: Any
) -> list[SummaryEntry]:
    """One pass: totals, histogram, chunk length; the `top` best records, best first.

    "Best" follows the call first: every record called virus ranks above every record
    called others, then the higher max P(virus), then input order. Ranked by the score
    alone, an "others" record (a frame with P(virus) 0.52 in a chunk that another frame
    calls others) would rank above a "virus" one (a chunk whose best scores are 0.501
    and 0.499), and the table would seem to contradict its own calls.
    """
    heap: list[tuple[bool, float, int, SummaryEntry]] = []  # min-heap on rank_key
    calls: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    lengths = set(CHUNK_LENGTHS)
    histogram = summary.histogram
    row = 0
    with path.open(encoding="utf-8", newline="\n") as handle:
        header = handle.readline()
        if header not in (SUMMARY_HEADER, SUMMARY_HEADER_V2, SUMMARY_HEADER_V1):
            raise ReportError(f"{path} does not start with the header of {SUMMARY}")
        width = header.count("\t") + 1
        for index, line in enumerate(handle):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != width:
                raise ReportError(f"{path} line {index + 2}: expected {width} fields")
            record_id, length_s, chunks_s, frames_s, virus_s, score_s, call = fields[:7]
            try:
                length, chunks = int(length_s), int(chunks_s)
                frames, chunks_virus = int(frames_s), int(virus_s)
                score = math.nan if score_s == "NA" else float(score_s)
            except ValueError:
                raise ReportError(f"{path} line {index + 2}: not a number") from None
            calls[call] += 1
            if header == SUMMARY_HEADER:  # `warnings`, last: ";"-joined words, or empty
                warnings.update(word for word in fields[-1].split(";") if word)
            summary.frames += frames
            summary.chunks += chunks
            summary.chunks_virus += chunks_virus
            if length > 0 and lengths:
                lengths = {n for n in lengths if -(-length // n) == chunks}
            if math.isnan(score):
                summary.unscored += 1
            else:
                score = min(max(score, 0.0), 1.0)
                histogram[min(int(score * BINS), BINS - 1)] += 1
                key = (call == LABELS[1], score, -index)
                if len(heap) < top:
                    entry = SummaryEntry(
                        record_id, length, chunks, frames, chunks_virus, score, call, row, index
                    )
                    heapq.heappush(heap, (*key, entry))
                elif key > heap[0][:3]:
                    entry = SummaryEntry(
                        record_id, length, chunks, frames, chunks_virus, score, call, row, index
                    )
                    heapq.heapreplace(heap, (*key, entry))
                summary.peak_held = max(summary.peak_held, len(heap))
            row += frames
            summary.records += 1
    summary.calls = dict(calls)
    summary.warnings = dict(warnings) if header == SUMMARY_HEADER else None
    if given_length:
        summary.chunk_length = int(given_length)
    elif lengths:
        # Both fit only when every record is <= 300 or 501-600 bases long: then take the
        # smaller, the common model (a panel's spans may be off by a few bases). None
        # fits: another chunk length; each record's is then estimated from its row.
        summary.chunk_length = min(lengths)
    return [entry for *_, entry in sorted(heap, reverse=True)]


# --- pass 2: prediction_results.txt, the top records' rows only ------------------------


def chunk_details(
    path: Path, entries: list[SummaryEntry], chunk_length: int | None
) -> dict[str, list[ChunkCall]]:
    """The chunks (with rows) of each entry, read by skipping to their rows."""
    details: dict[str, list[ChunkCall]] = {}
    position = 0  # data rows consumed so far
    with path.open(encoding="utf-8", newline="\n") as handle:
        header = handle.readline()
        if header != PREDICTIONS_HEADER:
            raise ReportError(f"{path} does not start with the header of {PREDICTIONS}")
        for entry in sorted(entries, key=lambda e: e.row):
            skipped = sum(1 for _ in islice(handle, entry.row - position))
            rows = list(islice(handle, entry.frames))
            if skipped + position < entry.row or len(rows) < entry.frames:
                raise ReportError(
                    f"{path} ends before the rows of record {entry.record_id}: "
                    f"it and {SUMMARY} disagree"
                )
            position = entry.row + entry.frames
            details[entry.record_id] = _chunks_of(path, entry, rows, chunk_length)
    return details


def _chunks_of(
    path: Path, entry: SummaryEntry, rows: Iterable[str], chunk_length: int | None
) -> list[ChunkCall]:
    best: dict[int, list[float]] = {}
    prefix = f"{entry.record_id}_chunk_"
    for line in rows:
        fields = line.rstrip("\n").split("\t")
        frame_id = fields[0]
        if len(fields) != 4 or not frame_id.startswith(prefix):
            raise ReportError(
                f"{path}: expected a row of record {entry.record_id}, found {frame_id!r}: "
                f"it and {SUMMARY} disagree"
            )
        try:
            number = int(frame_id[len(prefix) : -2])
            p_others, p_virus = float(fields[2]), float(fields[3])
        except ValueError:
            raise ReportError(f"{path}: malformed row {frame_id!r}") from None
        maxima = best.setdefault(number, [p_others, p_virus])
        maxima[0] = max(maxima[0], p_others)
        maxima[1] = max(maxima[1], p_virus)
    size = chunk_length or max(1, -(-entry.length // max(entry.chunks, 1)))
    starts = chunk_starts(entry.length, size)
    result = []
    for number, (p_others, p_virus) in best.items():
        start = starts[number - 1] if 0 < number <= len(starts) else (number - 1) * size
        end = min(start + size, entry.length) if entry.length > start else start + size
        result.append(ChunkCall(number, start, end, p_others, p_virus))
    return result
