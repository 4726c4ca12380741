"""The progress log's queries on the `units` and `parts` tables, and `_Store`, all of
the log's queries (`JobQueries` adds jobs and events) on one connection.

Every method runs on the thread that owns the connection (the `ProgressLog` facade
queues it there); a write method is exactly one transaction (`connection.transaction`).
A write that changes the job row too returns the row as SQLite then holds it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from virnuc.pipeline import gzip_index
from virnuc.pipeline.gzip_index import GzipIndex

from .connection import transaction as _transaction
from .job_queries import DEFAULT_MAX_EVENTS, JobQueries
from .rows import (
    TERMINAL_STATES,
    ConflictError,
    JobRow,
    NotFoundError,
    PartOutcome,
    PartRecord,
    PartRejected,
    PartRow,
    ProgressLogError,
    UnitPlan,
    UnitRow,
    UnitState,
    check_part_fields,
    columns,
)

__all__ = ["DEFAULT_MAX_EVENTS", "_Store"]

_UNIT_COLS = columns(UnitRow)
_PART_COLS = columns(PartRow)


class _Store(JobQueries):
    """Every query of the progress log; each method runs on the connection's thread."""

    # planning

    @_transaction
    def add_units(self, job_id: str, units: list[UnitPlan]) -> None:
        if self._job(job_id).units_total is not None:
            raise ConflictError(f"job {job_id}: planning has finished; no more units")
        last = self._last_unit(job_id)
        for unit in units:
            if last is not None and unit.unit_id <= last.unit_id:
                self._check_replanned(job_id, unit)
                continue
            self._check_next_unit(job_id, unit, last)
            self.conn.execute(
                "INSERT INTO units (job_id, unit_id, start_offset, first_record, record_count,"
                " end_offset, digest, input_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    unit.unit_id,
                    unit.start_offset,
                    unit.first_record,
                    unit.record_count,
                    unit.end_offset,
                    unit.digest,
                    unit.input_index,
                ),
            )
            last = UnitRow(
                job_id,
                unit.unit_id,
                unit.start_offset,
                unit.first_record,
                unit.record_count,
                "pending",
                0,
                unit.end_offset,
                unit.digest,
                unit.input_index,
            )

    def _last_unit(self, job_id: str) -> UnitRow | None:
        row = self.conn.execute(
            f"SELECT {_UNIT_COLS} FROM units WHERE job_id = ? ORDER BY unit_id DESC LIMIT 1",
            (job_id,),
        ).fetchone()
        return None if row is None else UnitRow(*row)

    def _check_next_unit(self, job_id: str, unit: UnitPlan, last: UnitRow | None) -> None:
        """Units must tile the inputs: ids 0, 1, …; records contiguous across files;
        files in order, none skipped; offsets contiguous within a file (a unit starts
        where the previous one's bytes end, when that end is known)."""
        want_id, want_first = (0, 0) if last is None else (last.unit_id + 1, last.end_record)
        same_file = last is not None and unit.input_index == last.input_index
        next_file = unit.input_index == (0 if last is None else last.input_index + 1)
        min_offset = last.start_offset + 1 if last is not None and same_file else 0
        byte_gap = (
            last is not None and same_file and last.end_offset not in (None, unit.start_offset)
        )
        if (unit.unit_id, unit.first_record) != (want_id, want_first) or (
            unit.record_count < 1
            or not (same_file or next_file)
            or unit.start_offset < min_offset
            or byte_gap
            or (unit.end_offset is not None and unit.end_offset <= unit.start_offset)
        ):
            raise ConflictError(
                f"job {job_id}: unit {unit} does not follow the plan so far "
                f"(expected unit {want_id} from record {want_first}, offset >= {min_offset})"
            )

    def _check_replanned(self, job_id: str, unit: UnitPlan) -> None:
        """Re-adding a stored unit (planning replayed after a crash) must match it; a
        unit stored without a digest (an older virnuc planned it) keeps none."""
        stored = self._unit(job_id, unit.unit_id)
        if (stored.start_offset, stored.first_record, stored.record_count, stored.input_index) != (
            unit.start_offset,
            unit.first_record,
            unit.record_count,
            unit.input_index,
        ):
            raise ConflictError(f"job {job_id}: unit {unit} differs from stored {stored}")
        if stored.digest is not None and (stored.end_offset, stored.digest) != (
            unit.end_offset,
            unit.digest,
        ):
            raise ConflictError(
                f"job {job_id}: input changed since submission: the bytes of unit "
                f"{unit.unit_id} (records {unit.first_record}.."
                f"{unit.first_record + unit.record_count - 1}) "
                "differ from when it was first planned; resubmit the job"
            )

    @_transaction
    def finish_planning(
        self,
        job_id: str,
        records_total: int,
        units_total: int,
        gzip_indexes: Sequence[GzipIndex | None] = (),
    ) -> JobRow:
        job = self._job(job_id)
        last = self._last_unit(job_id)
        planned = (0, 0) if last is None else (last.end_record, last.unit_id + 1)
        if planned != (records_total, units_total):
            raise ConflictError(
                f"job {job_id}: planned {planned[0]} records in {planned[1]} units, "
                f"not {records_total} in {units_total}"
            )
        if job.units_total is None:
            self._bump_job(
                job_id,
                "records_total = ?, units_total = ?, gzip_indexes = ?",
                (records_total, units_total, gzip_index.dumps(list(gzip_indexes))),
            )
        return self._job(job_id)

    # units

    def _unit(self, job_id: str, unit_id: int) -> UnitRow:
        row = self.conn.execute(
            f"SELECT {_UNIT_COLS} FROM units WHERE job_id = ? AND unit_id = ?", (job_id, unit_id)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"job {job_id!r} has no unit {unit_id}")
        return UnitRow(*row)

    def pending_units(self, job_id: str, limit: int) -> list[UnitRow]:
        rows = self.conn.execute(
            f"SELECT {_UNIT_COLS} FROM units WHERE job_id = ? AND state = 'pending'"
            " ORDER BY unit_id LIMIT ?",
            (job_id, limit),
        )
        return [UnitRow(*r) for r in rows]

    @_transaction
    def set_unit_state(self, job_id: str, unit_id: int, state: UnitState) -> None:
        unit = self._unit(job_id, unit_id)
        if state == "done" and self.resume_offset(job_id, unit_id) != unit.end_record:
            raise ConflictError(f"job {job_id} unit {unit_id}: not all records are recorded")
        self._set_unit(job_id, unit_id, "state = ?", (state,))

    def _set_unit(self, job_id: str, unit_id: int, sets: str, params: tuple[Any, ...]) -> None:
        cursor = self.conn.execute(
            f"UPDATE units SET {sets} WHERE job_id = ? AND unit_id = ?", (*params, job_id, unit_id)
        )
        if cursor.rowcount != 1:
            raise NotFoundError(f"job {job_id!r} has no unit {unit_id}")

    @_transaction
    def reset_running_units(self, job_id: str | None) -> int:
        cursor = self.conn.execute(
            "UPDATE units SET state = 'pending' WHERE state = 'running'"
            " AND (? IS NULL OR job_id = ?)",
            (job_id, job_id),
        )
        return cursor.rowcount

    def units_remaining(self, job_id: str) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) FROM units WHERE job_id = ? AND state != 'done'", (job_id,)
        ).fetchone()
        return int(row[0])

    @_transaction
    def note_worker_death(self, job_id: str, unit_id: int) -> int:
        self._set_unit(job_id, unit_id, "failures = failures + 1", ())
        return self._unit(job_id, unit_id).failures

    # parts

    def resume_offset(self, job_id: str, unit_id: int) -> int:
        """End of the recorded parts, after checking that they tile the unit's start."""
        unit = self._unit(job_id, unit_id)
        count, first, end, breaks = self.conn.execute(
            "SELECT COUNT(*), MIN(first_record), MAX(first_record + record_count),"
            " TOTAL(prev_end IS NOT NULL AND prev_end != first_record)"
            " FROM (SELECT first_record, record_count, LAG(first_record + record_count)"
            "       OVER (ORDER BY first_record) AS prev_end"
            "       FROM parts WHERE job_id = ? AND unit_id = ?)",
            (job_id, unit_id),
        ).fetchone()
        if count == 0:
            return unit.first_record
        if first != unit.first_record or breaks or end > unit.end_record:
            raise ProgressLogError(
                f"job {job_id} unit {unit_id}: recorded parts do not tile records "
                f"[{unit.first_record}, {unit.end_record}) (first {first}, end {end}, "
                f"{int(breaks)} gap(s) or overlap(s)); the progress log was altered"
            )
        return int(end)

    def resume_point(self, job_id: str, unit_id: int) -> tuple[int, int]:
        """(record index, input byte offset) where the unit's computation resumes."""
        unit = self._unit(job_id, unit_id)
        record = self.resume_offset(job_id, unit_id)
        if record == unit.first_record:
            return record, unit.start_offset
        row = self.conn.execute(
            "SELECT end_offset FROM parts WHERE job_id = ? AND unit_id = ?"
            " ORDER BY first_record DESC LIMIT 1",
            (job_id, unit_id),
        ).fetchone()
        return record, int(row[0])

    @_transaction
    def record_part(self, part: PartRecord) -> PartOutcome:
        check_part_fields(part)
        try:
            unit = self._unit(part.job_id, part.unit_id)
        except NotFoundError as exc:
            raise PartRejected("unknown_unit", str(exc)) from None
        if self._same_part_recorded(part):
            return PartOutcome(False, unit.state == "done", self._job(part.job_id))
        if self._job(part.job_id).state in TERMINAL_STATES:
            raise PartRejected("job_finished", f"job {part.job_id} has finished")
        self._check_part_place(part, unit)
        self._insert_part(part)
        unit_done = part.first_record + part.record_count == unit.end_record
        # The unit made progress: its consecutive worker deaths start again from 0.
        done = ", state = 'done'" if unit_done else ""
        self._set_unit(part.job_id, part.unit_id, f"failures = 0{done}", ())
        return PartOutcome(True, unit_done, self._job(part.job_id))

    def _same_part_recorded(self, part: PartRecord) -> bool:
        """True for a retried ack; a different part in the same place is a conflict."""
        row = self.conn.execute(
            "SELECT record_count, sha256 FROM parts"
            " WHERE job_id = ? AND unit_id = ? AND first_record = ?",
            (part.job_id, part.unit_id, part.first_record),
        ).fetchone()
        if row is None:
            return False
        if tuple(row) == (part.record_count, part.sha256):
            return True
        raise PartRejected(
            "conflict",
            f"job {part.job_id} unit {part.unit_id} already has a different part "
            f"({row[0]} records, sha256 {row[1][:12]}…) at record {part.first_record}",
        )

    def _check_part_place(self, part: PartRecord, unit: UnitRow) -> None:
        resume = self.resume_offset(part.job_id, part.unit_id)
        where = f"job {part.job_id} unit {part.unit_id}"
        if part.first_record > resume:
            raise PartRejected(
                "gap", f"{where}: part starts at {part.first_record}, resume offset is {resume}"
            )
        if part.first_record < resume:
            raise PartRejected(
                "overlap",
                f"{where}: part starts at {part.first_record}, records up to {resume} are recorded",
            )
        if part.first_record + part.record_count > unit.end_record:
            raise PartRejected(
                "past_end",
                f"{where}: part ends at "
                f"{part.first_record + part.record_count}, "
                f"the unit at {unit.end_record}",
            )

    def _insert_part(self, part: PartRecord) -> None:
        self.conn.execute(
            f"INSERT INTO parts ({_PART_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                part.job_id,
                part.unit_id,
                part.first_record,
                part.record_count,
                part.frames,
                part.path,
                part.size,
                part.sha256,
                part.end_offset,
                part.frames_reused,
                time.time(),
            ),
        )
        self._bump_job(
            part.job_id,
            "records_done = records_done + ?, frames_done = frames_done + ?,"
            " frames_reused = frames_reused + ?",
            (part.record_count, part.frames, part.frames_reused),
        )

    def parts_of_unit(self, job_id: str, unit_id: int) -> list[PartRow]:
        rows = self.conn.execute(
            f"SELECT {_PART_COLS} FROM parts WHERE job_id = ? AND unit_id = ?"
            " ORDER BY first_record",
            (job_id, unit_id),
        )
        return [PartRow(*r) for r in rows]

    def parts_page(self, job_id: str, after: tuple[int, int] | None, limit: int) -> list[PartRow]:
        unit_id, first_record = (-1, -1) if after is None else after
        rows = self.conn.execute(
            f"SELECT {_PART_COLS} FROM parts WHERE job_id = ?"
            " AND (unit_id, first_record) > (?, ?) ORDER BY unit_id, first_record LIMIT ?",
            (job_id, unit_id, first_record, limit),
        )
        return [PartRow(*r) for r in rows]

    @_transaction
    def delete_parts(
        self, job_id: str, unit_id: int, from_record: int
    ) -> tuple[list[PartRow], JobRow]:
        self._unit(job_id, unit_id)
        doomed = [
            p
            for p in self.parts_of_unit(job_id, unit_id)
            if p.first_record + p.record_count > from_record
        ]
        self.conn.execute(
            "DELETE FROM parts WHERE job_id = ? AND unit_id = ?"
            " AND first_record + record_count > ?",
            (job_id, unit_id, from_record),
        )
        records = sum(p.record_count for p in doomed)
        frames = sum(p.frames for p in doomed)
        reused = sum(p.frames_reused for p in doomed)
        self._bump_job(
            job_id,
            "records_done = records_done - ?, frames_done = frames_done - ?,"
            " frames_reused = frames_reused - ?, records_recomputed = records_recomputed + ?",
            (records, frames, reused, records),
        )
        self._set_unit(job_id, unit_id, "state = 'pending'", ())
        return doomed, self._job(job_id)
