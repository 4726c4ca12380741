"""A picture and a report of a run's calls: `prediction.png` and `report.html`.

`write_report(out_dir)` reads a complete output directory (pipeline/outputs.py) and
writes, beside the outputs:

* `prediction.png` — the original's `drew_fig.py` idea: one panel per record, for the
  `top` best-ranked records (virus calls first, then by max P(virus)); along the
  record, a segment per chunk (its real span, `frames.chunk_starts`) at the chunk's
  highest score, red when the chunk is called virus (as
  `prediction_results_highestscore.csv`), dark blue otherwise. Chunks
  without a kept frame are not drawn; a grey line shows the record's length.
* `report.html` — one self-contained file (images inline as base64 `data:` URIs, no
  external CSS, JS or links): a banner for demo models, the run's summary and model
  files (run_info.json), how to read the numbers and the call rule, a histogram of
  per-record max P(virus) (50 bins over [0, 1]), the plot, and a table of the
  best-ranked records; when no record was scored, a line that says so instead.

Bounded for millions of records: the outputs are read in two streaming passes that
hold at most `top` records' details (report_scan.py); the pictures are drawn by
report_figures.py, the page by report_page.py.

Both files are written atomically (`durable.publish`). Nothing here imports torch, and
matplotlib is imported only when drawing: virnucd and `virnucctl report` import this.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .durable import publish
from .output_format import PREDICTIONS, RUN_INFO, SUMMARY
from .report_figures import chunk_plot, histogram_plot
from .report_page import report_page
from .report_scan import ReportError, ReportSummary, TopRecord, chunk_details, scan_summary

PLOT = "prediction.png"
REPORT = "report.html"
REPORT_NAMES = (PLOT, REPORT)

MAX_TOP = 200  # panels in one figure: 200 x 1.6 in x 80 dpi stays far below Agg's limits


def write_report(
    out_dir: Path,
    *,
    top: int = 20,
    run_info: dict[str, Any] | None = None,
    shown_as: Path | None = None,
) -> ReportSummary:
    """Write `prediction.png` and `report.html` into `out_dir`, beside its outputs.

    `top` records (1..MAX_TOP) get a panel and a table row. `run_info` supplies what the
    output files do not hold (by default, the directory's `run_info.json` if any: see
    pipeline/run_info.py for its keys), each optional (shown as "not recorded" when
    absent): `inputs`, `models` (str, list or dict; run_info.json's per-role entries
    get a table of files and checksums), `precision`, `chunk_length` (int; else inferred
    from the records' lengths and chunk counts), `time` or `seconds` (seconds, or a
    str); `demo_models` or `profile: "demo"` puts a banner on the page; other keys are
    shown as given. `shown_as` is how the report and messages name the
    directory (virnucd writes through an opened directory's /proc/self/fd path).
    Raises `ReportError` when `out_dir` holds no complete outputs or they are
    malformed; `OSError` from writing.
    """
    if not 1 <= top <= MAX_TOP:
        raise ValueError(f"top must be between 1 and {MAX_TOP}, got {top}")
    began = time.monotonic()
    out_dir = Path(out_dir)
    shown = shown_as or out_dir
    info = dict(run_info if run_info is not None else _recorded_run_info(out_dir))
    predictions, summary_file = out_dir / PREDICTIONS, out_dir / SUMMARY
    if not predictions.is_file():
        raise ReportError(
            f"{shown} holds no complete outputs (no {PREDICTIONS}): "
            "a run that has not finished, or not an output directory"
        )
    if not summary_file.is_file():
        raise ReportError(f"{shown} has {PREDICTIONS} but no {SUMMARY}")
    summary = ReportSummary(shown, out_dir / PLOT, out_dir / REPORT)
    given_length = info.get("chunk_length")
    entries = scan_summary(summary_file, top, summary, given_length)
    details = chunk_details(predictions, entries, summary.chunk_length)
    summary.details_kept = len(details)
    summary.top = [
        TopRecord(rank, e.record_id, e.length, e.chunks, e.frames, e.chunks_virus, e.score, e.call)
        for rank, e in enumerate(entries, 1)
    ]
    plot_png = chunk_plot(summary.top, details)
    histogram_png = histogram_plot(summary.histogram)
    publish(summary.plot, plot_png)
    summary.seconds = time.monotonic() - began
    page = report_page(summary, info, histogram_png, plot_png)
    publish(summary.report, page.encode("utf-8"))
    return summary


def _recorded_run_info(out_dir: Path) -> dict[str, Any]:
    """The directory's run_info.json, or {} when it has none that reads as one."""
    try:
        info = json.loads((out_dir / RUN_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
