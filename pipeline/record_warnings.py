"""The `warnings` column of `sequence_summary.tsv`: why a record's call is weak or absent.

Each warning is a word; a record's are joined with `;` in this order, empty when none:

* `no_frames` — no frame of the record was scored (every frame has a stop codon, or
  the record is too short to translate): it has no score and no call;
* `shorter_than_chunk` — the record is shorter than one chunk (300 or 500 bases): the
  classifier was trained on whole chunks and sees less here;
* `mostly_N` — more than half of its bases are N or n: the frames are made mostly of
  dropped codons, and what is left says little.

`mostly_N` needs the record's N count (`RecordResult.n_bases`); a result without one
(a part written by an older virnuc) gets no `mostly_N`, never a wrong one.
"""

from __future__ import annotations

from .output_format import NO_FRAMES  # the call of such a record, and its warning

SHORTER_THAN_CHUNK = "shorter_than_chunk"
MOSTLY_N = "mostly_N"
WARNINGS = (NO_FRAMES, SHORTER_THAN_CHUNK, MOSTLY_N)  # in column order


def n_bases(sequence: str) -> int:
    """How many of `sequence`'s letters are N or n."""
    return sequence.count("N") + sequence.count("n")


def record_warnings(
    *, frames: int, length: int, chunk_length: int | None, n_count: int | None
) -> str:
    """The record's `warnings` field: the words that apply, `;`-joined, or ""."""
    found = []
    if frames == 0:
        found.append(NO_FRAMES)
    if chunk_length is not None and length < chunk_length:
        found.append(SHORTER_THAN_CHUNK)
    if n_count is not None and 2 * n_count > length:
        found.append(MOSTLY_N)
    return ";".join(found)
