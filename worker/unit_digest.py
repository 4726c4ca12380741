"""Reading a unit's records while digesting its bytes, to catch an input rewritten since
planning (virnuc.input_digest).

`read_unit` reads the assigned records like `virnuc.pipeline.inputs.read_records`
(FASTA or FASTQ, detected by content), and
feeds every byte the parser reads inside the unit's range [unit_offset,
unit_end_offset) to the unit's `UnitDigest`; a resumed unit first digests its bytes
before `start_offset`, from the same file handle, so the whole range is covered with
no second pass. `RecordFeed` calls `UnitDigest.verify` when it has read the unit's last
record, before handing it on, so a unit whose bytes differ never gets its last part
(which is what marks it done in the daemon): it fails with `UnitChanged`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import BinaryIO

from virnuc.input_digest import digest_of_range, hash_bytes, new_digest
from virnuc.pipeline.fasta import FastaError, FastaRecord, open_binary
from virnuc.pipeline.inputs import detect_format, parse_records
from virnuc.protocol import Assign


class UnitChanged(Exception):
    """The unit's bytes are not those planned: the input changed since submission."""


class UnitDigest:
    """The digest of one assigned unit's byte range, as it is read."""

    def __init__(self, assign: Assign):
        self.assign = assign
        self.expected = assign.digest
        self.start = assign.start_offset if assign.unit_offset is None else assign.unit_offset
        self.end = assign.unit_end_offset
        self._digest = new_digest()

    @property
    def active(self) -> bool:
        """False for a unit planned without a digest (by an older virnuc)."""
        return self.expected is not None and self.end is not None

    def open_at_start(self, raw: BinaryIO) -> None:
        """Position `raw` at the assign's start offset, digesting the unit's bytes
        before it (a resumed unit) on the way."""
        a = self.assign
        if not self.active or self.start == a.start_offset:
            if a.start_offset:
                raw.seek(a.start_offset)  # GzipFile seeks forward by decompressing
            return
        if self.start:
            raw.seek(self.start)
        hash_bytes(raw, self._digest, a.start_offset - self.start)
        raw.seek(a.start_offset)  # normally a no-op: the prefix read ended there

    def lines(self, raw: BinaryIO) -> Iterator[bytes]:
        """`raw`'s lines from the start offset on, each digested as far as it lies in
        the unit's range."""
        offset = self.assign.start_offset
        end = self.end if self.active and self.end is not None else -1
        for line in raw:
            if offset < end:
                self._digest.update(line if offset + len(line) <= end else line[: end - offset])
            offset += len(line)
            yield line

    def verify(self, last_end: int) -> None:
        """Raise `UnitChanged` unless the bytes read match the plan, the unit's last
        record ending (at `last_end`) where the unit's bytes end."""
        if self.active and (self._digest.hexdigest() != self.expected or last_end != self.end):
            raise self.changed()

    def file_differs(self) -> bool:
        """Whether the unit's range in the input, as it is now, differs from the plan
        (for a unit that failed to read: was it rewritten?). False when unsure."""
        if not self.active or self.end is None:
            return False
        try:
            return digest_of_range(self.assign.input, self.start, self.end) != self.expected
        except (OSError, ValueError, EOFError, zlib.error):
            return False

    def changed(self) -> UnitChanged:
        a = self.assign
        last = a.start_record + a.record_count - 1
        return UnitChanged(
            f"input changed since submission: {a.input}: unit {a.unit_id} "
            f"(records {a.start_record}..{last}, bytes {self.start}..{self.end}) does not "
            "hold the bytes it was planned from (the file was rewritten, though its size "
            "and modification time may be the same); resubmit the job"
        )


def read_unit(assign: Assign, digest: UnitDigest) -> Iterator[FastaRecord]:
    """The assigned records, from `start_offset` on, at most `record_count` of them;
    the bytes they are parsed from go through `digest`. The unit's file is the
    assign's `input` (a unit never spans two files)."""
    fmt = detect_format(assign.input)
    with open_binary(assign.input) as raw:
        try:
            digest.open_at_start(raw)
            records = parse_records(
                fmt,
                digest.lines(raw),
                offset=assign.start_offset,
                first_index=assign.start_record,
                path=assign.input,
            )
            for n, record in enumerate(records):
                yield record
                if n + 1 >= assign.record_count:
                    return
        except (UnicodeDecodeError, EOFError, OSError, zlib.error) as exc:
            raise FastaError(assign.input, f"unreadable {fmt.upper()} ({exc})") from exc
