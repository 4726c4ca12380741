"""The report's words: how to read it, the demo banner, and what ran (run_info.json).

Kept apart from the page's layout (report_page.py) so the explanation is read, and
changed, in one place. Every text the page takes from here is escaped by the page or
here; nothing in `run_info` is trusted as HTML.
"""

from __future__ import annotations

import html
from typing import Any

from .output_format import HIGHEST_SCORE, LABELS, NO_FRAMES, PREDICTIONS, SUMMARY, VIRUS_FASTA

VIRUS, OTHERS = LABELS[1], LABELS[0]

DEMO_BANNER = (
    '<p class="banner">DEMO MODELS: this run used the demo profile, tiny models with '
    "random weights. Its scores and calls are meaningless; they only show that the "
    "pipeline runs. For real predictions use VirNucPro's published weights.</p>"
)

RANKING_RULE = (
    f"Records called <b>{VIRUS}</b> are ranked first, then records called {OTHERS}; "
    "within each group, by max P(virus), then input order. No record called "
    f"{OTHERS} ranks above a record called {VIRUS}, though it may show a higher max "
    "P(virus) (see the call rule above)."
)


def how_to_read(chunk_length: int | None) -> str:
    """The "How to read this report" section, in words a biologist follows."""
    length = f"{chunk_length:,}" if chunk_length else "L (300 or 500)"
    items = [
        f"<b>Chunk.</b> Each record (a contig or read) is cut into overlapping pieces of "
        f"{length} bases, the length the classifier was trained on; a record shorter "
        "than that is one short chunk.",
        "<b>Frame.</b> Each chunk is translated in its six reading frames: F1, F2, F3 on "
        "the sequence as given, R1, R2, R3 on its reverse complement. A frame whose "
        "protein has a stop codon, or is empty, is not scored.",
        "<b>score1 and score2.</b> Each scored frame gets two numbers that add up to 1: "
        "score1 = P(others), score2 = P(virus), the classifier's confidence that the "
        f"frame is non-viral or viral (one row per frame in <code>{PREDICTIONS}</code>).",
        f"<b>Chunk call.</b> A chunk is called {VIRUS} when its highest score2 over its "
        f"frames is at least its highest score1 (<code>{HIGHEST_SCORE}</code>).",
        f"<b>Record call.</b> A record is called <b>{VIRUS}</b> when at least one of its "
        f"chunks is called {VIRUS}, otherwise {OTHERS}. A record with no scored frame "
        f"(every frame has a stop codon, or the record is too short to translate) is "
        f"called <code>{NO_FRAMES}</code>: it was not classified. The records called "
        f"{VIRUS} are in <code>{VIRUS_FASTA}</code>, as FASTA, in input order.",
        "<b>max P(virus).</b> The record's highest score2 over all its frames. It is not "
        f"the call: a chunk with a frame at P(virus) 0.52 is still {OTHERS} when another "
        "of its frames scores P(others) 0.60, and a chunk whose best scores are 0.501 "
        f"and 0.499 is {VIRUS}.",
        f"<b>Ranking.</b> {RANKING_RULE}",
        f"<b>Warnings</b> (last column of <code>{SUMMARY}</code>, counted above): "
        "<code>no_frames</code>, no scored frame; <code>shorter_than_chunk</code>, the "
        "record is shorter than one chunk, so the models saw less than they were "
        "trained on; <code>mostly_N</code>, more than half of its bases are N.",
        "The scores are the classifier's softmax outputs: a ranking of confidence, not "
        "calibrated probabilities that a record is viral.",
    ]
    return "<ul>\n" + "\n".join(f"<li>{item}</li>" for item in items) + "\n</ul>"


def is_demo(info: dict[str, Any]) -> bool:
    return bool(info.get("demo_models")) or info.get("profile") == "demo"


def model_files_table(models: Any) -> str:
    """run_info.json's `models` as a table: role, as given, each file's size and SHA-256."""
    if not isinstance(models, dict) or not all(isinstance(m, dict) for m in models.values()):
        return ""
    rows = ["<tr><th>model</th><th>given as</th><th>file</th><th>size</th><th>SHA-256</th></tr>"]
    for role, model in models.items():
        files = model.get("files") or [{"path": "(loaded by name: no local file here)"}]
        for entry in files:
            size = entry.get("size")
            cells = (
                str(role),
                str(model.get("given", "")),
                str(entry.get("path", "")),
                "missing" if entry.get("missing") else (f"{size:,} B" if size is not None else ""),
                str(entry.get("sha256", "")),
            )
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"
