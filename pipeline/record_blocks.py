"""Many whole records checked at once with numpy: the scan's fast path, FASTQ and FASTA.

`check_fastq` / `check_fasta` vouch for the whole records at the start of a block of
text, or return None: the exact line scanner (`fastq.FastqScanner`,
`fasta.FastaScanner`) then reads the block, so it alone words every error (file, line,
what is wrong) and handles what is legal but rare (blank lines between FASTQ records,
CRLF line ends, control bytes in a header). What the fast path accepts is exactly what
the line scanner would: each line (FASTQ) or each header and sequence stretch (FASTA)
is classified by the OR of its bytes' classes, one numpy pass over the block:

* a header is '@' (FASTQ) or '>' (FASTA) then an id that starts with a printable
  byte, no control bytes;
* a FASTQ sequence is non-empty and made of IUPAC nucleotide letters (U for RNA); a
  FASTA record's sequence lines hold those letters, spaces and tabs, at least one letter;
* a FASTQ '+' line starts with '+', and its quality line is as long as its sequence and
  made of printable bytes ('!'-'~').

An id is the header's first word (up to a space or a tab; with no other whitespace
allowed, as `fasta.record_id` splits on any), hashed as `record_ids.id_hash` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .record_ids import hash_spans

# IUPAC nucleotide codes (U for RNA) plus gap characters. Anything else (digits,
# protein-only letters such as E, F, I, L, P, Q) means the file is not nucleotides.
DNA_BYTES = b"ACGTURYSWKMBDHVNacgturyswkmbdhvn-."
LINES_PER_RECORD = 4
BASE, PRINTABLE, SPACE, OTHER = 0, 1, 2, 4  # byte classes; a newline counts as BASE


def _class_table() -> bytes:
    table = bytearray([OTHER] * 256)  # controls, DEL, non-ASCII, '\r'
    for byte in range(33, 127):
        table[byte] = PRINTABLE
    for byte in DNA_BYTES:
        table[byte] = BASE
    table[ord(" ")] = table[ord("\t")] = SPACE
    table[ord("\n")] = BASE
    return bytes(table)


_CLASSES = _class_table()


@dataclass(frozen=True, slots=True)
class CheckedRecords:
    """Whole records at the start of a block, valid as the line scanner judges."""

    end: int  # bytes of the block they fill
    starts: np.ndarray  # where each record's header starts in the block (int64)
    id_hashes: np.ndarray  # `record_ids.id_hash` of each record's id (int64)
    bases: int
    lines: int

    @property
    def records(self) -> int:
        return len(self.starts)


def check_fastq(block: bytes) -> CheckedRecords | None:
    """The whole FASTQ records at the start of `block` (which starts at a record), if
    each is valid and none is followed by a blank line; else None (see the module doc)."""
    data = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(data == ord("\n"))
    records = len(ends) // LINES_PER_RECORD
    if records == 0:
        return None
    ends = ends[: records * LINES_PER_RECORD]
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    classes = np.frombuffer(block.translate(_CLASSES), np.uint8)
    kinds = np.bitwise_or.reduceat(classes, starts)  # per line, the OR of its classes
    lengths = ends - starts
    header, sequence, plus, quality = (slice(k, None, LINES_PER_RECORD) for k in range(4))
    heads = starts[header]
    valid = (
        (lengths[header] >= 2).all()
        and (data[heads] == ord("@")).all()
        and (classes[heads + 1] < SPACE).all()
        and not (kinds[header] & OTHER).any()
        and (lengths[sequence] > 0).all()
        and not kinds[sequence].any()
        and (data[starts[plus]] == ord("+")).all()
        and (lengths[sequence] == lengths[quality]).all()
        and not (kinds[quality] & (SPACE | OTHER)).any()
    )
    if not valid:
        return None
    hashes = _id_hashes(data, classes, heads, ends[header])
    bases = int(lengths[sequence].sum())
    return CheckedRecords(int(ends[-1]) + 1, heads, hashes, bases, len(ends))


def check_fasta(block: bytes, final: bool) -> CheckedRecords | None:
    """The whole FASTA records of `block` (which starts at a header): those followed by
    another header in it, and the last one too when `final` (the end of the file), if
    each is valid; else None (see the module doc)."""
    data = np.frombuffer(block, np.uint8)
    if not len(data) or data[0] != ord(">"):
        return None
    ends = np.flatnonzero(data == ord("\n"))
    line_starts = np.concatenate(([0], ends[ends + 1 < len(data)] + 1))
    heads = line_starts[data[line_starts] == ord(">")]
    end = len(block) if final else int(heads[-1])
    heads = heads if final else heads[:-1]
    head_ends = np.searchsorted(ends, heads)  # the newline ending each header
    if not len(heads) or head_ends[-1] == len(ends):
        return None
    head_ends = ends[head_ends]
    classes = np.frombuffer(block.translate(_CLASSES), np.uint8)[:end]
    kinds = np.bitwise_or.reduceat(classes, np.ravel(np.column_stack((heads, head_ends))))
    sequence_ends = np.append(heads[1:], end)
    gaps = np.flatnonzero(classes == SPACE)
    bases = (sequence_ends - head_ends) - _between(ends, head_ends, sequence_ends)
    bases -= _between(gaps, head_ends, sequence_ends)
    valid = (
        (head_ends - heads >= 2).all()
        and (classes[heads + 1] < SPACE).all()
        and not (kinds[0::2] & OTHER).any()
        and not (kinds[1::2] & (PRINTABLE | OTHER)).any()
        and (bases > 0).all()
    )
    if not valid:
        return None
    hashes = _id_hashes(data, classes, heads, head_ends)
    lines = int(np.searchsorted(ends, end)) + (final and not block.endswith(b"\n"))
    return CheckedRecords(end, heads, hashes, int(bases.sum()), lines)


def _between(positions: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """How many of the sorted `positions` lie in each [start, end)."""
    return np.searchsorted(positions, ends) - np.searchsorted(positions, starts)


def _id_hashes(
    data: np.ndarray, classes: np.ndarray, heads: np.ndarray, line_ends: np.ndarray
) -> np.ndarray:
    """`record_ids.id_hash` of each header's id, from its second byte to its first
    space or tab, or its line end."""
    return hash_spans(data, heads + 1, _id_ends(classes, heads, line_ends))


def _id_ends(classes: np.ndarray, heads: np.ndarray, line_ends: np.ndarray) -> np.ndarray:
    """Where each header's id ends: at its first space or tab, else its line end."""
    gaps = np.flatnonzero(classes[: int(line_ends[-1])] == SPACE)
    after = np.append(gaps, line_ends[-1])[np.searchsorted(gaps, heads + 1)]
    return np.minimum(after, line_ends)
