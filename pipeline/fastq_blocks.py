"""Many whole FASTQ records checked at once with numpy: the scan's fast path.

`check_records` vouches for the records at the start of a block of FASTQ text, or
returns None: the exact line scanner (`fastq.FastqScanner`) then reads the block, so
it alone words every error (file, line, what is wrong) and handles what is legal but
rare (blank lines between records, CRLF line ends, control bytes in a header). What
the fast path accepts is exactly what the line scanner would: every line of a record
is classified by the OR of its bytes' classes, one numpy pass over the block:

* a header is '@' then an id that starts with a printable byte, no controls;
* a sequence is non-empty and made of IUPAC nucleotide letters (U for RNA) only;
* a '+' line starts with '+';
* a quality line is as long as its sequence and made of printable bytes ('!'-'~').

An id is the header's first word (up to a space or a tab; with no other whitespace
allowed, as `fasta.record_id` splits on any), hashed as `record_ids.id_hash` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fasta import _DNA_BYTES

LINES_PER_RECORD = 4
BASE, PRINTABLE, SPACE, OTHER = 0, 1, 2, 4  # byte classes; a newline counts as BASE


def _class_table() -> bytes:
    table = bytearray([OTHER] * 256)  # controls, DEL, non-ASCII, '\r'
    for byte in range(33, 127):
        table[byte] = PRINTABLE
    for byte in _DNA_BYTES:
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

    @property
    def records(self) -> int:
        return len(self.starts)


def check_records(block: bytes) -> CheckedRecords | None:
    """The whole records at the start of `block` (which starts at a record), if each
    is valid and none is followed by a blank line; else None (see the module doc)."""
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
    id_ends = _id_ends(classes, heads, ends[header])
    hashes = np.fromiter(
        (hash(block[s:e]) for s, e in zip((heads + 1).tolist(), id_ends.tolist(), strict=True)),
        dtype=np.int64,
        count=records,
    )
    return CheckedRecords(int(ends[-1]) + 1, heads, hashes, int(lengths[sequence].sum()))


def _id_ends(classes: np.ndarray, heads: np.ndarray, line_ends: np.ndarray) -> np.ndarray:
    """Where each header's id ends: at its first space or tab, else its line end."""
    gaps = np.flatnonzero(classes[: int(line_ends[-1])] == SPACE)
    after = np.append(gaps, line_ends[-1])[np.searchsorted(gaps, heads + 1)]
    return np.minimum(after, line_ends)
