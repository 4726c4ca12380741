"""`report.html`: one self-contained page (images inline, no external CSS, JS or links)."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from typing import Any

from .output_format import LABELS, NO_FRAMES
from .report_scan import BINS, ReportSummary

#: `run_info` keys shown in the summary, in this order, then any other keys given.
RUN_INFO_FIELDS = (
    ("inputs", "Inputs"),
    ("models", "Models"),
    ("precision", "Precision"),
    ("chunk_length", "Chunk length"),
    ("time", "Time"),
)
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


def report_page(summary: ReportSummary, info: dict[str, Any], histogram: bytes, plot: bytes) -> str:
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
        *((f"Records called {label}", f"{summary.calls.get(label, 0):,}") for label in CALLS),
        *(
            (f"Records called {label}", f"{count:,}")
            for label, count in summary.calls.items()
            if label not in CALLS
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
(<code>{html.escape(summary.plot.name)}</code>).</p>
<img alt="chunk calls of the top records" src="{_data_uri(plot)}">
<h2>Top records</h2>
<table>
{_row([(c, False) for c in columns], "th")}
{top_rows}
</table>
</body>
</html>
"""
