"""`report.html`: one self-contained page (images inline, no external CSS, JS or links)."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from typing import Any

from .output_format import LABELS, NO_FRAMES
from .record_warnings import WARNINGS
from .report_scan import BINS, ReportSummary
from .report_text import DEMO_BANNER, RANKING_RULE, how_to_read, is_demo, model_files_table

#: `run_info` keys shown in the summary, in this order, then any other keys given
#: (run_info.json's `models` has its own table).
RUN_INFO_FIELDS = (
    ("virnuc_version", "virnuc version"),
    ("created_utc", "Date (UTC)"),
    ("host", "Host"),
    ("devices", "Devices"),
    ("inputs", "Inputs"),
    ("output", "Output"),
    ("options", "Options"),
    ("models", "Models"),
    ("profile", "Profile"),
    ("precision", "Precision"),
    ("chunk_length", "Chunk length"),
    ("seconds", "Time"),
    ("time", "Time"),
)
ALWAYS_SHOWN = ("inputs", "models", "precision")  # "not recorded" when absent
HIDDEN_KEYS = {"demo_models"}  # shown as the banner
NOT_RECORDED = "not recorded"
CALLS = (LABELS[1], LABELS[0], NO_FRAMES)  # the summary's rows of calls, in this order

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f2f2; }
img { max-width: 100%; }
.virus { color: #c00; font-weight: bold; }
.banner { background: #fde8e8; border: 2px solid #c00; padding: 0.6em; font-weight: bold; }
"""


def _info_value(key: str, value: Any) -> str:
    if value is None or value == "":
        return NOT_RECORDED
    if key in ("time", "seconds") and isinstance(value, int | float):
        return f"{value:.1f} s"
    if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
        return "; ".join(f"{k}: {v.get('given', '')}" for k, v in value.items())
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


def _summary_rows(summary: ReportSummary, info: dict[str, Any]) -> list[tuple[str, str]]:
    known = dict(RUN_INFO_FIELDS)
    shown = [key for key, _ in RUN_INFO_FIELDS if key in info or key in ALWAYS_SHOWN]
    return [
        ("Output directory", str(summary.out_dir)),
        *((known[key], _info_value(key, info.get(key))) for key in shown),
        *(
            (str(k), _info_value(str(k), v))
            for k, v in info.items()
            if k not in known and k not in HIDDEN_KEYS
        ),
        ("Records", f"{summary.records:,}"),
        ("Frames scored", f"{summary.frames:,}"),
        ("Chunks (virus / all)", f"{summary.chunks_virus:,} / {summary.chunks:,}"),
        *((f"Records called {label}", f"{summary.calls.get(label, 0):,}") for label in CALLS),
        *(
            (f"Records called {label}", f"{count:,}")
            for label, count in summary.calls.items()
            if label not in CALLS
        ),
        *_warning_rows(summary.warnings),
        ("Report made in", f"{summary.seconds:.1f} s"),
    ]


def _warning_rows(warnings: dict[str, int] | None) -> list[tuple[str, str]]:
    """Records per warning (each in the summary's `warnings` column), every known one
    shown, 0 included; an older summary without the column says so."""
    if warnings is None:
        return [("Records with warnings", "not recorded (a summary without warnings)")]
    known = [(f"Records with warning {w}", f"{warnings.get(w, 0):,}") for w in WARNINGS]
    other = [
        (f"Records with warning {w}", f"{n:,}") for w, n in warnings.items() if w not in WARNINGS
    ]
    return known + other


def _top_table(summary: ReportSummary) -> str:
    columns = ("#", "record", "length", "chunks", "frames", "virus chunks", "max P(virus)", "call")
    rows = "\n".join(
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
    return f"<table>\n{_row([(c, False) for c in columns], 'th')}\n{rows}\n</table>"


def _scored_sections(summary: ReportSummary, histogram: bytes, plot: bytes) -> str:
    """The histogram, the panels and the table; an honest line when nothing was scored."""
    if not summary.top:
        return (
            "<h2>Scores</h2>\n<p>No record has a scored frame "
            f"({summary.unscored:,} of {summary.records:,} records are "
            f"<code>{NO_FRAMES}</code>): there is no score to plot and no record to "
            "rank.</p>"
        )
    n = len(summary.top)
    best = "the best-ranked record" if n == 1 else f"the {n} best-ranked records"
    return f"""<h2>Max P(virus) per record</h2>
<p>{BINS} bins over [0, 1]; {summary.unscored:,} records without a scored frame are not
counted.</p>
<img alt="histogram of per-record max P(virus)" src="{_data_uri(histogram)}">
<h2>Chunk calls of {best}</h2>
<p>One panel per record, in the order of the table below; a segment per chunk along the
record at its called class's highest score, red when the chunk is called virus, dark
blue otherwise (<code>{html.escape(summary.plot.name)}</code>).</p>
<img alt="chunk calls of the best-ranked records" src="{_data_uri(plot)}">
<h2>Best-ranked records</h2>
<p>{RANKING_RULE}</p>
{_top_table(summary)}"""


def report_page(summary: ReportSummary, info: dict[str, Any], histogram: bytes, plot: bytes) -> str:
    if "chunk_length" not in info and summary.chunk_length:
        info["chunk_length"] = f"{summary.chunk_length} (inferred from the records)"
    summary_table = "\n".join(
        _row([(k, False), (v, False)]) for k, v in _summary_rows(summary, info)
    )
    models = model_files_table(info.get("models"))
    model_section = f"<h2>Model files</h2>\n{models}" if models else ""
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
{DEMO_BANNER if is_demo(info) else ""}
<h2>Summary</h2>
<table>
{summary_table}
</table>
{model_section}
<h2>How to read this report</h2>
{how_to_read(summary.chunk_length)}
{_scored_sections(summary, histogram, plot)}
</body>
</html>
"""
