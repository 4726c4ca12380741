"""`virus.fna`: the records called virus, as FASTA, for the next tool (CheckV, ...).

One entry per record whose `sequence_summary.tsv` call is `virus` (at least one chunk
with max score2 >= max score1), in input order: `>` and the record's id (the first
word of its header, as every output names it), then its sequence as read (RNA's U
read as T, as for the predictions) in lines of `LINE_WIDTH`. A run without viruses
gives an empty file, so "no viruses" and "not run" look different.

`ResultWriter` writes it with the other outputs, under a temporary name, and
publishes it with them (the same commit point), when its caller hands it each
record's sequence (`with_sequences`): the in-process run from the records it reads,
virnucd's assembly from its pass over the inputs. Each entry is written as its record
comes: nothing is held but the one record.
"""

from __future__ import annotations

LINE_WIDTH = 60


def fasta_entry(record_id: str, sequence: str) -> str:
    """The record as a FASTA entry, its sequence wrapped at `LINE_WIDTH`."""
    lines = (sequence[i : i + LINE_WIDTH] + "\n" for i in range(0, len(sequence), LINE_WIDTH))
    return f">{record_id}\n" + "".join(lines)
