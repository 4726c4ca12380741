"""The progress log: the daemon's durable memory, and the only code that touches SQLite.

docs/architecture.md §4: what is not recorded here does not exist. A checkpoint part counts once
its row is committed; a restarted daemon resumes every unfinished job from these rows.

Threading: two `sqlite3.Connection`s, each created and used by its own thread (both
keep `check_same_thread`, so any other use raises). The writing connection does every
write, and the reads that must see them in call order; a read-only one (opened on
first use) serves `get_job`, `list_jobs` and `count_jobs` for the control plane, which
in WAL mode never waits for a write's fsync. The asyncio side calls
`await log.method(...)`, which queues the work on the right thread with
`run_in_executor`; the event loop never waits on the disk. The one writing thread
serialises all writes in call order, so there are no write conflicts to retry.

Who writes: a job's row is written only by the scheduler's `JobBook`
(daemon/jobs/book.py); a write that changes it returns the row as committed, which
is the book's copy.

Durability: WAL journal with `synchronous=FULL` (a commit is on disk when the call
returns), foreign keys on, and every write method is exactly one transaction
(`BEGIN IMMEDIATE` … `COMMIT`, rolled back on any error). Schema versions live in
`PRAGMA user_version`; `schema.MIGRATIONS` brings an older file forward, and a file
written by a newer virnuc is refused rather than guessed at.

Units of a job tile its records: unit ids 0, 1, 2, … cover records 0.., each starting
where the previous ended. Parts of a unit tile the unit from its first record. Both
are enforced on write, so paging parts by (unit_id, first_record) is input order.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import structlog

from virnuc.disk_space import is_no_space
from virnuc.pipeline.gzip_index import GzipIndex
from virnuc.protocol import JobState

from .connection import close_emptying_wal, close_opened, open_connection
from .queries import DEFAULT_MAX_EVENTS, _Store
from .rows import (
    TERMINAL_STATES,
    UNFINISHED_STATES,
    ConflictError,
    JobRow,
    NewJob,
    NotFoundError,
    PartOutcome,
    PartRecord,
    PartRejected,
    PartRow,
    ProgressLogError,
    SchemaVersionError,
    UnitPlan,
    UnitRow,
    UnitState,
)

__all__ = [
    "DEFAULT_MAX_EVENTS",
    "TERMINAL_STATES",
    "UNFINISHED_STATES",
    "ConflictError",
    "JobRow",
    "JobState",
    "NewJob",
    "NotFoundError",
    "PartOutcome",
    "PartRecord",
    "PartRejected",
    "PartRow",
    "ProgressLog",
    "ProgressLogError",
    "SchemaVersionError",
    "UnitPlan",
    "UnitRow",
    "UnitState",
]

P = ParamSpec("P")
T = TypeVar("T")

log = structlog.get_logger()

FULL_RETRY_FIRST = 0.05  # seconds before a write that found the disk full is tried again,
FULL_RETRY_MAX = 2.0  # doubling up to this


# --- the asyncio facade ------------------------------------------------------------------


class ProgressLog:
    """Async access to the progress log; create with `await ProgressLog.open(path)`.

    Every method queues its work on one of the log's two threads and waits for it;
    calls on the writing thread run in the order they are made, and `get_job`,
    `list_jobs`, `count_jobs` see what was committed when they run. `close()` lets
    queued work finish, then closes; callers should shield it from cancellation
    (`await asyncio.shield(log.close())`).

    Cancelling a call does not cancel its work: once queued, a write still commits
    (or fails) on the log's thread, so treat a cancelled write as "maybe recorded" and
    read the log again rather than assume either way.
    """

    def __init__(self, path: str, store: _Store, executor: ThreadPoolExecutor) -> None:
        """Use `ProgressLog.open`: the store must have been opened on `executor`."""
        self.path = path
        self._store = store
        self._executor = executor
        self._closed = False
        self.disk_full: str | None = None  # while writes wait for space on the state disk
        # Reads (`status`, `list`) use their own connection and thread: in WAL mode they
        # never wait for a write's fsync, so the control plane stays fast under load.
        self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="progress-read")
        self._reader: _Store | None = None

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        trace: Callable[[str], None] | None = None,
    ) -> ProgressLog:
        """Open (creating or migrating) the log at `path`. `trace`, if given, sees every
        SQL statement, on the log's thread (for debugging and tests)."""
        spath = os.fspath(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="progress-log")
        opening = executor.submit(open_connection, spath, trace)
        try:
            conn = await asyncio.wrap_future(opening)
        except BaseException as exc:
            # Cancelled mid-open: the thread still finishes opening, so close it there.
            executor.submit(close_opened, opening)
            executor.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error):
                raise ProgressLogError(f"{spath}: cannot open progress log: {exc}") from exc
            raise
        return cls(spath, _Store(conn, max_events), executor)

    async def close(self) -> None:
        """Finish the queued work, then close the connection and stop the thread."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, close_emptying_wal, self._store.conn)
        except BaseException:
            self._executor.shutdown(wait=False)  # the close still runs, after the queue
            raise
        self._executor.shutdown(wait=True)  # the thread is idle: this only joins it
        if self._reader is not None:
            await loop.run_in_executor(self._read_executor, self._reader.close)
        self._read_executor.shutdown(wait=True)

    async def __aenter__(self) -> ProgressLog:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.shield(self.close())

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on the log's thread until it does not fail for a full state disk.

        Every write is one transaction, so a failed one left nothing: trying it again
        later is safe, and its caller simply waits, with nothing half recorded in
        memory or on disk. `disk_full` says why meanwhile (shown in `status`).
        """
        delay = FULL_RETRY_FIRST
        while True:
            try:
                result = await self._call_once(fn, *args, **kwargs)
            except ProgressLogError as exc:
                if not is_no_space(exc):
                    raise
                if self.disk_full is None:
                    log.warning("progress.disk_full", path=self.path, error=str(exc.__cause__))
                    state_dir = os.path.dirname(self.path)
                    self.disk_full = f"no space on {state_dir}: SQLite cannot record progress"
                await asyncio.sleep(delay)
                delay = min(FULL_RETRY_MAX, delay * 2)
                continue
            if self.disk_full is not None:
                self.disk_full = None
                log.info("progress.disk_writable", path=self.path)
            return result

    async def _call_once(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on the log's thread; SQLite's own errors become ProgressLogError."""
        if self._closed:
            raise ProgressLogError(f"{self.path}: the progress log is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )
        except sqlite3.Error as exc:
            name = getattr(fn, "__name__", "call")
            raise ProgressLogError(f"{self.path}: {name}: {exc}") from exc

    async def _read(self, name: str, *args: Any) -> Any:
        """Run the read-only `_Store` method `name` on the reading thread."""
        if self._closed:
            raise ProgressLogError(f"{self.path}: the progress log is closed")
        loop = asyncio.get_running_loop()

        def run() -> Any:
            if self._reader is None:
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
                self._reader = _Store(conn, 0)
            return getattr(self._reader, name)(*args)

        try:
            return await loop.run_in_executor(self._read_executor, run)
        except sqlite3.Error as exc:
            raise ProgressLogError(f"{self.path}: {name}: {exc}") from exc

    async def settings(self) -> dict[str, int | str]:
        """The connection's journal_mode, synchronous, foreign_keys and user_version."""
        return await self._call(self._store.settings)

    # jobs

    async def create_job(self, job: NewJob) -> JobRow:
        """Queue a new job at the end (seq = max + 1). ConflictError if the id is taken.
        Not retried on a full disk: the submit is answered `no_space` at once."""
        return await self._call_once(self._store.create_job, job)

    async def get_job(self, job_id: str) -> JobRow | None:
        return await self._read("get_job", job_id)

    async def list_jobs(
        self, offset: int = 0, limit: int = 100, owner: str | None = None
    ) -> list[JobRow]:
        """Jobs oldest first (submission order), paged; only `owner`'s when given."""
        return await self._read("list_jobs", offset, limit, owner)

    async def unfinished_jobs(self) -> list[JobRow]:
        """Queued, running and assembling jobs, oldest first: the queue to resume."""
        return await self._call(self._store.unfinished_jobs)

    async def count_jobs(self, owner: str | None = None) -> int:
        """How many jobs there are; only `owner`'s when given."""
        return await self._read("count_jobs", owner)

    async def set_job_state(
        self,
        job_id: str,
        state: JobState,
        error: str | None = None,
        error_code: str | None = None,
    ) -> JobRow:
        """Move a job to `state` (terminal states set finished_at) and log a `job.state`
        event; `error_code` marks a failure that is the user's to fix. A terminal job
        cannot change state: ConflictError."""
        return await self._call(self._store.set_job_state, job_id, state, error, error_code)

    async def drop_finished_jobs(self, finished_before: float) -> list[str]:
        """Delete the done, failed and killed jobs that ended before `finished_before`
        (a Unix time), with their units, parts and events; the ids dropped."""
        return await self._call(self._store.drop_finished_jobs, finished_before)

    async def add_restart(self, job_id: str, lost_records: int = 0) -> JobRow:
        """Count a unit re-run after a worker death, and the computed records it lost;
        returns the job's row."""
        return await self._call(self._store.add_restart, job_id, lost_records)

    # planning

    async def add_units(self, job_id: str, units: list[UnitPlan]) -> None:
        """Append one batch of planned units (call repeatedly while scanning). Units must
        continue the plan: ids 0, 1, …, records contiguous from 0, offsets increasing.
        Re-adding already stored identical units is a no-op, so an interrupted plan can
        be replayed from the start; a different one is a ConflictError."""
        await self._call(self._store.add_units, job_id, units)

    async def fingerprint_input(self, job_id: str, fingerprint: str) -> JobRow:
        """Record the input's fingerprint unless one is recorded already (a replayed
        plan); returns the job's row, with the fingerprint that counts."""
        return await self._call(self._store.fingerprint_input, job_id, fingerprint)

    async def finish_planning(
        self,
        job_id: str,
        records_total: int,
        units_total: int,
        gzip_indexes: Sequence[GzipIndex | None] = (),
    ) -> JobRow:
        """Close the plan, with each input's seek-point index; the totals must match the
        units added (ConflictError). Returns the job's row."""
        return await self._call(
            self._store.finish_planning, job_id, records_total, units_total, gzip_indexes
        )

    # units

    async def pending_units(self, job_id: str, limit: int) -> list[UnitRow]:
        """Up to `limit` pending units of the job, in unit order."""
        return await self._call(self._store.pending_units, job_id, limit)

    async def set_unit_state(self, job_id: str, unit_id: int, state: UnitState) -> None:
        """Set a unit pending or running; `done` only if its parts cover it (else
        ConflictError) — normally `record_part` marks units done."""
        await self._call(self._store.set_unit_state, job_id, unit_id, state)

    async def reset_running_units(self, job_id: str | None = None) -> int:
        """Make `running` units `pending` again (all jobs if job_id is None), as after a
        daemon restart: their workers are gone. Returns how many changed."""
        return await self._call(self._store.reset_running_units, job_id)

    async def units_remaining(self, job_id: str) -> int:
        """How many of the job's units are not done."""
        return await self._call(self._store.units_remaining, job_id)

    async def note_worker_death(self, job_id: str, unit_id: int) -> int:
        """Count a worker death on this unit; returns consecutive failures so far."""
        return await self._call(self._store.note_worker_death, job_id, unit_id)

    # parts

    async def resume_offset(self, job_id: str, unit_id: int) -> int:
        """First record of the unit not covered by recorded parts. ProgressLogError if
        the recorded parts do not tile the unit from its start."""
        return await self._call(self._store.resume_offset, job_id, unit_id)

    async def resume_point(self, job_id: str, unit_id: int) -> tuple[int, int]:
        """(record index, input byte offset) to resume the unit from; see `resume_offset`."""
        return await self._call(self._store.resume_point, job_id, unit_id)

    async def record_part(self, part: PartRecord) -> PartOutcome:
        """Record a checkpoint part in one transaction: the row, the job's records/frames
        done, the unit's completion, and its consecutive failures back to 0 (it made
        progress). Raises PartRejected (see its reasons); the same part again is a
        no-op with `recorded=False`. The outcome carries the job's row as committed."""
        return await self._call(self._store.record_part, part)

    async def parts_of_unit(self, job_id: str, unit_id: int) -> list[PartRow]:
        return await self._call(self._store.parts_of_unit, job_id, unit_id)

    async def parts_page(
        self, job_id: str, after: tuple[int, int] | None = None, limit: int = 1000
    ) -> list[PartRow]:
        """Up to `limit` parts in input order after the (unit_id, first_record) key."""
        return await self._call(self._store.parts_page, job_id, after, limit)

    async def iter_parts(self, job_id: str, page_size: int = 1000) -> AsyncIterator[PartRow]:
        """Every part of the job in input order, one page in memory at a time."""
        after: tuple[int, int] | None = None
        while page := await self.parts_page(job_id, after, page_size):
            for part in page:
                yield part
            after = (page[-1].unit_id, page[-1].first_record)

    async def delete_parts(
        self, job_id: str, unit_id: int, from_record: int
    ) -> tuple[list[PartRow], JobRow]:
        """Forget the unit's parts that reach `from_record` or beyond (a corrupt part and
        all after it): totals are rolled back, the records counted as recomputed, and
        the unit made pending. Returns the deleted rows, so their files can go too,
        and the job's row."""
        return await self._call(self._store.delete_parts, job_id, unit_id, from_record)

    # events

    async def log_event(
        self, kind: str, message: str, job_id: str | None = None, worker_id: str | None = None
    ) -> None:
        """Append to the audit trail, which keeps about the newest `max_events` rows."""
        await self._call(self._store.log_event, kind, message, job_id, worker_id)
