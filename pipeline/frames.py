"""VirNucPro's chunking, six-frame translation and frame selection, reproduced exactly.

The classifier was trained on features made this way, so every oddity of the original
is kept on purpose (docs/architecture.md §1.1-1.3):

* chunks overlap by an uneven shift list, and the last chunk can be shorter than L;
* a codon holding any letter other than A/C/G/T is dropped, not translated to X;
* a frame is kept when its protein is non-empty and has no stop anywhere — there is
  no "best frame", every clean frame becomes a row;
* a frame's nucleotide slice is `s[f-1 : f+3p]`, one base longer than its 3p codons.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

FRAME_NAMES = ("F1", "F2", "F3", "R1", "R2", "R3")

_BASES = "TCAG"
_AMINO_ACIDS = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
# The standard genetic code over A/C/G/T codons only; a codon missing here is dropped.
CODON_TABLE = {
    a + b + c: _AMINO_ACIDS[16 * i + 4 * j + k]
    for i, a in enumerate(_BASES)
    for j, b in enumerate(_BASES)
    for k, c in enumerate(_BASES)
}
# Only A, C, G and T are complemented; every other letter stays as it is.
_COMPLEMENT = str.maketrans("ACGT", "TGCA")
# Matches at a frame's start when a stop codon lies in that frame: whole codons are
# skipped, one at a time, up to the first stop.
_STOP_IN_FRAME = re.compile(r"(?:...)*?(?:TAA|TAG|TGA)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Frame:
    """One kept reading frame: a row of `prediction_results.txt`."""

    id: str
    chunk_id: str
    nucleotides: str
    protein: str


def chunk_starts(length: int, chunk_length: int) -> list[int]:
    """Start offsets of VirNucPro's overlapping chunks (n=1000, L=300 -> 0 249 498 747)."""
    if length <= 0:
        return []
    if length <= chunk_length:  # one chunk, the whole record (most reads)
        return [0]
    count = math.ceil(length / chunk_length)
    surplus = count * chunk_length - length
    base_shift = surplus // count
    larger = surplus - base_shift * (count - 1)
    shifts = ([base_shift + 1] * larger + [base_shift] * max(0, count - 1 - larger) + [0])[:count]
    starts, shifted = [], 0
    for k in range(count):
        starts.append(k * chunk_length - shifted)
        shifted += shifts[k]
    return starts


def chunks(record_id: str, sequence: str, chunk_length: int) -> list[tuple[str, str]]:
    """The record's chunks as (chunk id, bases); ids are `{record_id}_chunk_{k+1}`."""
    return [
        (f"{record_id}_chunk_{k + 1}", sequence[start : start + chunk_length])
        for k, start in enumerate(chunk_starts(len(sequence), chunk_length))
    ]


def reverse_complement(sequence: str) -> str:
    return sequence.translate(_COMPLEMENT)[::-1]


def translate(sequence: str) -> str:
    """Translate whole codons from offset 0, dropping codons with non-ACGT letters."""
    get = CODON_TABLE.get
    return "".join([get(sequence[i : i + 3], "") for i in range(0, len(sequence) - 2, 3)])


def chunk_frames(chunk_id: str, chunk: str) -> list[Frame]:
    """The kept frames of one chunk, in the order F1 F2 F3 R1 R2 R3.

    A frame with a stop codon is dropped untranslated (its protein would hold a '*'):
    most frames of most DNA have one, so this skips most of the translating.
    """
    forward = chunk.upper()
    frames = []
    for names, strand in (
        (FRAME_NAMES[:3], forward),
        (FRAME_NAMES[3:], reverse_complement(forward)),
    ):
        for offset, name in enumerate(names):
            if _STOP_IN_FRAME.match(strand, offset):
                continue
            protein = translate(strand[offset:])
            if protein:
                nucleotides = strand[offset : offset + 1 + 3 * len(protein)]
                frames.append(Frame(chunk_id + name, chunk_id, nucleotides, protein))
    return frames


def record_frames(record_id: str, sequence: str, chunk_length: int) -> Iterator[Frame]:
    """All kept frames of a record, chunk by chunk."""
    for chunk_id, chunk in chunks(record_id, sequence, chunk_length):
        yield from chunk_frames(chunk_id, chunk)
