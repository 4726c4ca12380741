"""A picture and a report of a run's calls: `prediction.png` and `report.html`.

`write_report(out_dir)` reads a complete output directory (pipeline/outputs.py) and
writes, beside the outputs:

* `prediction.png` — the original's `drew_fig.py` idea: one panel per record, for the
  `top` records with the highest max P(virus); along the record, a segment per chunk
  (its real span, `frames.chunk_starts`) at the chunk's highest score, red when the
  chunk is called virus (as `prediction_results_highestscore.csv`), dark blue otherwise.
  Chunks without a kept frame are not drawn; a grey line shows the record's length.
* `report.html` — one self-contained file (images inline as base64 `data:` URIs, no
  external CSS, JS or links): the run's summary, a histogram of per-record max P(virus)
  (50 bins over [0, 1]), the plot, and a table of the top records.

Bounded for millions of records, in two streaming passes:

1. `sequence_summary.tsv`, one row per record: totals (records, frames, chunks, calls
   per label), the histogram's 50 counts, and a heap of the `top` best records. Each
   heap entry remembers its record's first row in `prediction_results.txt` (the sum of
   `frames_scored` before it: both files are in input order).
2. `prediction_results.txt`, skipped through line by line (no parsing) to those rows
   only, stopping after the last one: the chunk scores of the top records alone.

So at most `top` records' details are held (`ReportSummary.peak_held`,
`details_kept`), whatever the size of the run.

Both files are written atomically: `.NAME.partial`, fsync, rename, fsync of the
directory. Nothing here imports torch: `outputs.py` does (its labels come from the
classifier), so the file names and headers are repeated below and a test checks they
match. matplotlib is imported only when drawing.
"""

from __future__ import annotations

import base64
import heapq
import html
import io
import math
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from .frames import chunk_starts

# As pipeline/outputs.py (tests/pipeline/test_report.py checks they agree).
PREDICTIONS = "prediction_results.txt"
SUMMARY = "sequence_summary.tsv"
PREDICTIONS_HEADER = "Sequence_ID\tPrediction\tscore1\tscore2\n"
SUMMARY_HEADER = (
    "record_id\tlength\tchunks\tframes_scored\tchunks_virus\tmax_virus_score\tcall\tsource\n"
)
# Written before the `source` column was added; `virnucctl report` still reads it.
SUMMARY_HEADER_V1 = SUMMARY_HEADER.replace("\tsource", "")

PLOT = "prediction.png"
REPORT = "report.html"
REPORT_NAMES = (PLOT, REPORT)

BINS = 50
MAX_TOP = 200  # panels in one figure: 200 x 1.6 in x 80 dpi stays far below Agg's limits
CHUNK_LENGTHS = (300, 500)  # VirNucPro's two models
VIRUS_COLOR, OTHERS_COLOR = "red", "darkblue"  # as drew_fig.py

#: `run_info` keys shown in the summary, in this order, then any other keys given.
RUN_INFO_FIELDS = (
    ("inputs", "Inputs"),
    ("models", "Models"),
    ("precision", "Precision"),
    ("chunk_length", "Chunk length"),
    ("time", "Time"),
)
NOT_RECORDED = "not recorded"


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


def write_report(
    out_dir: Path, *, top: int = 20, run_info: dict[str, Any] | None = None
) -> ReportSummary:
    """Write `prediction.png` and `report.html` into `out_dir`, beside its outputs.

    `top` records (1..MAX_TOP) get a panel and a table row. `run_info` supplies what the
    output files do not hold, each optional (shown as "not recorded" when absent):
    `inputs`, `models` (str, list or dict), `precision`, `chunk_length` (int; else
    inferred from the records' lengths and chunk counts), `time` (seconds, or a str);
    other keys are shown as given. Raises `ReportError` when `out_dir` holds no complete
    outputs or they are malformed; `OSError` from writing.
    """
    if not 1 <= top <= MAX_TOP:
        raise ValueError(f"top must be between 1 and {MAX_TOP}, got {top}")
    began = time.monotonic()
    out_dir = Path(out_dir)
    info = dict(run_info or {})
    predictions, summary_file = out_dir / PREDICTIONS, out_dir / SUMMARY
    if not predictions.is_file():
        raise ReportError(
            f"{out_dir} holds no complete outputs (no {PREDICTIONS}): "
            "a run that has not finished, or not an output directory"
        )
    if not summary_file.is_file():
        raise ReportError(f"{out_dir} has {PREDICTIONS} but no {SUMMARY}")
    summary = ReportSummary(out_dir, out_dir / PLOT, out_dir / REPORT)
    given_length = info.get("chunk_length")
    entries = _scan_summary(summary_file, top, summary, given_length)
    details = _chunk_details(predictions, entries, summary.chunk_length)
    summary.details_kept = len(details)
    summary.top = [
        TopRecord(rank, e.record_id, e.length, e.chunks, e.frames, e.chunks_virus, e.score, e.call)
        for rank, e in enumerate(entries, 1)
    ]
    plot_png = _plot(summary.top, details)
    histogram_png = _histogram_plot(summary.histogram)
    publish(summary.plot, plot_png)
    summary.seconds = time.monotonic() - began
    page = _html(summary, info, histogram_png, plot_png)
    publish(summary.report, page.encode("utf-8"))
    return summary


# --- pass 1: sequence_summary.tsv ------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    record_id: str
    length: int
    chunks: int
    frames: int
    chunks_virus: int
    score: float
    call: str
    row: int  # its first data row in prediction_results.txt
    index: int  # input order, for ties


def _scan_summary(path: Path, top: int, summary: ReportSummary, given_length: Any) -> list[_Entry]:
    """One pass: totals, histogram, chunk length; the `top` best records, best first."""
    heap: list[tuple[float, int, _Entry]] = []  # min-heap on (score, -index)
    calls: Counter[str] = Counter()
    lengths = set(CHUNK_LENGTHS)
    histogram = summary.histogram
    row = 0
    with path.open(encoding="utf-8", newline="\n") as handle:
        header = handle.readline()
        if header not in (SUMMARY_HEADER, SUMMARY_HEADER_V1):
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
                key = (score, -index)
                if len(heap) < top:
                    entry = _Entry(
                        record_id, length, chunks, frames, chunks_virus, score, call, row, index
                    )
                    heapq.heappush(heap, (*key, entry))
                elif key > heap[0][:2]:
                    entry = _Entry(
                        record_id, length, chunks, frames, chunks_virus, score, call, row, index
                    )
                    heapq.heapreplace(heap, (*key, entry))
                summary.peak_held = max(summary.peak_held, len(heap))
            row += frames
            summary.records += 1
    summary.calls = dict(calls)
    if given_length:
        summary.chunk_length = int(given_length)
    elif lengths:
        # Both fit only when every record is <= 300 or 501-600 bases long: then take the
        # smaller, the common model (a panel's spans may be off by a few bases). None
        # fits: another chunk length; each record's is then estimated from its row.
        summary.chunk_length = min(lengths)
    return [entry for *_, entry in sorted(heap, reverse=True)]


# --- pass 2: prediction_results.txt, the top records' rows only ------------------------


def _chunk_details(
    path: Path, entries: list[_Entry], chunk_length: int | None
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
    path: Path, entry: _Entry, rows: Iterable[str], chunk_length: int | None
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


# --- drawing (matplotlib, imported here only) ------------------------------------------


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    # No Software tag: the same outputs give the same bytes.
    figure.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    return buffer.getvalue()


def _plot(top: list[TopRecord], details: dict[str, list[ChunkCall]]) -> bytes:
    """drew_fig.py's figure: a panel per record, a segment per chunk, red for virus."""
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    panels = max(len(top), 1)
    figure = Figure(figsize=(16, 0.6 + 1.6 * panels), layout="constrained")
    axes = figure.subplots(nrows=panels, ncols=1, squeeze=False)[:, 0]
    if not top:
        axes[0].text(0.5, 0.5, "no scored records", ha="center", va="center")
        axes[0].set_axis_off()
    for ax, record in zip(axes, top, strict=False):
        chunks = details.get(record.record_id, [])
        length = max(record.length, max((c.end for c in chunks), default=0), 1)
        ax.plot([0, length], [0.47, 0.47], color="lightgray", linewidth=1)
        ax.add_collection(
            LineCollection(
                [[(c.start, c.score), (c.end, c.score)] for c in chunks],
                colors=[VIRUS_COLOR if c.is_virus else OTHERS_COLOR for c in chunks],
                linewidths=2,
            )
        )
        ax.set_xlim(0, length)
        ax.set_ylim(0.45, 1.05)  # as drew_fig.py: a called class scores at least 0.5
        ax.set_title(
            f"{record.rank}. {record.record_id}  (max P(virus) {record.max_virus_score:.4g}, "
            f"{record.chunks_virus}/{record.chunks} chunks virus, {record.call})",
            fontsize=11,
            fontweight="bold",
            loc="left",
        )
        ax.set_ylabel("score", fontsize=9, color="dimgray")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.tick_params(colors="gray", labelsize=8)
        ax.ticklabel_format(style="plain", axis="x", useOffset=False)
    axes[-1].set_xlabel("position along the record (bp)", fontsize=10, color="dimgray")
    if top:
        figure.legend(
            handles=[
                Line2D([], [], color=VIRUS_COLOR, linewidth=2, label="chunk called virus"),
                Line2D([], [], color=OTHERS_COLOR, linewidth=2, label="chunk called others"),
            ],
            loc="outside upper right",
            ncols=2,
            frameon=False,
        )
    return _png(figure)


def _histogram_plot(counts: list[int]) -> bytes:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.2), layout="constrained")
    ax = figure.subplots()
    width = 1 / BINS
    ax.bar([i * width for i in range(BINS)], counts, width=width, align="edge", color="gray")
    nonzero = [c for c in counts if c]
    if nonzero and max(nonzero) > 100 * min(nonzero):
        ax.set_yscale("log")  # a few viruses among many others stay visible
    ax.set_xlim(0, 1)
    ax.set_xlabel("max P(virus) of the record")
    ax.set_ylabel("records")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _png(figure)


# --- the page --------------------------------------------------------------------------

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f2f2; }
img { max-width: 100%; }
.virus { color: #c00; font-weight: bold; }
"""


def _info_value(key: str, value: Any) -> str:
    if value is None or value == "":
        return NOT_RECORDED
    if key == "time" and isinstance(value, int | float):
        return f"{value:.1f} s"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _row(cells: Iterable[tuple[str, bool]], tag: str = "td") -> str:
    """A table row; each cell is (text, numeric); the text is escaped here."""
    return (
        "<tr>"
        + "".join(
            f"<{tag}{' class=n' if numeric else ''}>{html.escape(text)}</{tag}>"
            for text, numeric in cells
        )
        + "</tr>"
    )


def _html(summary: ReportSummary, info: dict[str, Any], histogram: bytes, plot: bytes) -> str:
    if "chunk_length" not in info and summary.chunk_length:
        info["chunk_length"] = f"{summary.chunk_length} (inferred from the records)"
    rows: list[tuple[str, str]] = [
        ("Output directory", str(summary.out_dir)),
        *((label, _info_value(key, info.get(key))) for key, label in RUN_INFO_FIELDS),
        *(
            (str(k), _info_value(str(k), v))
            for k, v in info.items()
            if k not in dict(RUN_INFO_FIELDS)
        ),
        ("Records", f"{summary.records:,}"),
        ("Frames scored", f"{summary.frames:,}"),
        ("Chunks (virus / all)", f"{summary.chunks_virus:,} / {summary.chunks:,}"),
        *(
            (f"Records called {label}", f"{summary.calls.get(label, 0):,}")
            for label in ("virus", "others", "no_frames")
        ),
        *(
            (f"Records called {label}", f"{count:,}")
            for label, count in summary.calls.items()
            if label not in ("virus", "others", "no_frames")
        ),
        ("Report made in", f"{summary.seconds:.1f} s"),
    ]
    summary_table = "\n".join(_row([(k, False), (v, False)]) for k, v in rows)
    columns = ("#", "record", "length", "chunks", "frames", "virus chunks", "max P(virus)", "call")
    top_rows = "\n".join(
        _row(
            [
                (str(t.rank), True),
                (t.record_id, False),
                (f"{t.length:,}", True),
                (str(t.chunks), True),
                (str(t.frames_scored), True),
                (str(t.chunks_virus), True),
                (f"{t.max_virus_score:.6g}", True),
                (t.call, False),
            ]
        ).replace("<td>virus</td>", '<td class="virus">virus</td>')
        for t in summary.top
    )
    title = f"virnuc report: {summary.out_dir.name or summary.out_dir}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<h2>Summary</h2>
<table>
{summary_table}
</table>
<h2>Max P(virus) per record</h2>
<p>{BINS} bins over [0, 1]; {summary.unscored:,} records without a scored frame are not
counted.</p>
<img alt="histogram of per-record max P(virus)" src="{_data_uri(histogram)}">
<h2>Chunk calls of the top {len(summary.top)} records</h2>
<p>One panel per record, by max P(virus); a segment per chunk along the record at its
highest score, red when the chunk is called virus, dark blue otherwise
(<code>{PLOT}</code>).</p>
<img alt="chunk calls of the top records" src="{_data_uri(plot)}">
<h2>Top records</h2>
<table>
{_row([(c, False) for c in columns], "th")}
{top_rows}
</table>
</body>
</html>
"""


# --- atomic publishing -----------------------------------------------------------------


def publish(path: Path, data: bytes) -> None:
    """Write `data` to `.NAME.partial`, fsync, rename onto `path`, fsync the directory."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.unlink(missing_ok=True)  # a new inode, never one linked elsewhere
    try:
        with tmp.open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    # As outputs.fsync_path, which cannot be imported here without torch.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
