"""The report's pictures: drew_fig.py's chunk-call panels, and the score histogram.

matplotlib is imported inside the drawing functions: importing the report costs
nothing until a report is drawn.
"""

from __future__ import annotations

import io
from typing import Any

from .report_scan import BINS, ChunkCall, TopRecord

VIRUS_COLOR, OTHERS_COLOR = "red", "darkblue"  # as drew_fig.py


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    # No Software tag: the same outputs give the same bytes.
    figure.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    return buffer.getvalue()


def chunk_plot(top: list[TopRecord], details: dict[str, list[ChunkCall]]) -> bytes:
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


def histogram_plot(counts: list[int]) -> bytes:
    return _png(histogram_figure(counts))


def histogram_figure(counts: list[int]) -> Any:
    """The histogram of per-record max P(virus); its y axis starts at 0, even empty."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.2), layout="constrained")
    ax = figure.subplots()
    width = 1 / BINS
    ax.bar([i * width for i in range(BINS)], counts, width=width, align="edge", color="gray")
    nonzero = [c for c in counts if c]
    if nonzero and max(nonzero) > 100 * min(nonzero):
        ax.set_yscale("log")  # a few viruses among many others stay visible
    if not nonzero:  # matplotlib would centre an empty axis on 0, below it
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.5, "no scored records", ha="center", va="center")
    ax.set_xlim(0, 1)
    ax.set_xlabel("max P(virus) of the record")
    ax.set_ylabel("records")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return figure
