"""A unit's feed: the input records of one unit, read from its offset, for the Predictor.

`RecordFeed` reads the unit's records from `start_offset`, remembers each one until
its result comes back (its index and resume offset), and turns bad input (unreadable,
too short, a wrong start offset) into a `UnitInputError` kept for after the records
before it are finished. Each request for a record is a block boundary, where it calls
back into the unit run (`virnuc.worker.unit_run`) to report progress, stop or cancel.
The unit's bytes are digested as they are read (`virnuc.worker.unit_digest`): a unit
whose bytes differ from the plan raises `UnitChanged` before its last record is out.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import cast

from virnuc.pipeline.fasta import FastaRecord
from virnuc.pipeline.outputs import RecordResult
from virnuc.protocol import Assign
from virnuc.worker.unit_digest import UnitDigest, read_unit


class UnitInputError(Exception):
    """The unit's input cannot be read as planned, at one record (bad or missing input).

    Kept in `RecordFeed.failure` and raised by the unit run once the records before
    `record` are finished; the unit fails with a non-fatal `error` naming the record.
    """

    def __init__(self, record: int, reason: str):
        super().__init__(f"record {record}: {reason}")
        self.record = record
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _InFlight:
    index: int
    record_id: str
    end_offset: int


class RecordFeed:
    """The unit's records for the Predictor, remembered until their results return.

    Results come back in input order, so each result pops the oldest record: that
    gives its index and the byte offset just past it (the resume offset). The
    Predictor asks for the next record only after yielding every finished result,
    so each request is a block boundary: `on_boundary` reports progress there and
    raises to stop or cancel.

    Bad input (unreadable, too short, a wrong start offset) does not raise here: the
    feed ends, the Predictor finishes the records before it, and `failure` says why,
    so the work done up to the bad record is still saved.
    """

    def __init__(self, assign: Assign, on_boundary: Callable[[], None]):
        self.assign = assign
        self.on_boundary = on_boundary
        self.pulled = 0
        self.failure: UnitInputError | None = None
        self.digest = UnitDigest(assign)
        self._in_flight: deque[_InFlight] = deque()

    def __iter__(self) -> Iterator[FastaRecord]:
        # read_unit is a generator: close it explicitly so the file is released at once
        records = cast(Generator[FastaRecord, None, None], read_unit(self.assign, self.digest))
        with contextlib.closing(records):
            while True:
                self.on_boundary()
                record = self._next(records)
                if record is None:
                    return
                self._in_flight.append(_InFlight(record.index, record.id, record.end_offset))
                self.pulled += 1
                yield record

    def _next(self, records: Iterator[FastaRecord]) -> FastaRecord | None:
        """The next record, or None at the end of the unit or at bad input; raises
        `UnitChanged` when the unit's bytes are not the planned ones."""
        record = self._read(records)
        if self.failure is not None and self.digest.file_differs():
            raise self.digest.changed()  # rewritten: say so rather than how it broke
        if record is not None and self.pulled + 1 == self.assign.record_count:
            self.digest.verify(record.end_offset)  # before the unit's last record is out
        return record

    def _read(self, records: Iterator[FastaRecord]) -> FastaRecord | None:
        a, index = self.assign, self.assign.start_record + self.pulled
        try:
            record = next(records, None)
        except Exception as exc:
            self.failure = UnitInputError(index, f"cannot read the input: {exc}")
            return None
        if record is None and self.pulled < a.record_count:
            self.failure = UnitInputError(
                index, f"the input ends there, but the unit expects {a.record_count} records "
                f"from record {a.start_record}; was {a.input} changed since it was planned?",
            )  # fmt: skip
        elif record is not None and self.pulled == 0 and record.offset != a.start_offset:
            self.failure = UnitInputError(
                index, f"byte offset {a.start_offset} is not the start of a record"
            )
            return None
        return record

    def finish(self, result: RecordResult) -> _InFlight:
        """The record `result` belongs to (the oldest one handed out)."""
        record = self._in_flight.popleft()
        if record.record_id != result.record_id:  # would mean results out of order: a bug
            raise RuntimeError(f"result for {result.record_id} where {record.record_id} was due")
        return record

    def oldest_unfinished(self) -> int:
        """The record a failure is blamed on when no better one is known."""
        if self._in_flight:
            return self._in_flight[0].index
        return self.assign.start_record + self.pulled
