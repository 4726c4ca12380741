"""The job book: the unfinished jobs, and the one writer of their rows.

The scheduler owns the one `JobBook` and calls it from its own task only; the control
server reads its views (`status_of`, `statuses_of`, `busy_outputs`) on the same
thread, never writing. Every write of a job's row in the progress log is made here
(create_job, set_job_state, fingerprint_input, finish_planning, record_part,
add_restart, delete_parts), and each returns the row as committed, which becomes
`JobRun.row`: the copy is replaced, never patched or re-read. A state written is
published as a `state` event.

What happens to a job (it is planned, runs, assembles, fails) is the scheduler's
decision; the book records it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence

import structlog

from virnuc.pipeline.gzip_index import GzipIndex
from virnuc.protocol import Checkpoint, ErrorCode, JobState, JobStatus, job_event

from ..config import DaemonConfig
from ..progress.log import JobRow, NewJob, PartRecord, ProgressLog
from ..publisher import EventPublisher
from . import files as job_files
from .input_check import fingerprint_if_readable
from .run import JobRun, job_status
from .space_wait import SpaceWaits

log = structlog.get_logger()


class JobBook:
    def __init__(
        self,
        config: DaemonConfig,
        progress: ProgressLog,
        events: EventPublisher,
        space: SpaceWaits,
        positions: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        """`positions` gives each queued job's place in the queue (the `UnitQueue`'s
        estimate), for status; computed on demand, at most once per request."""
        self.config = config
        self.progress = progress
        self.events = events
        self.space = space  # a job's wait for space shows in its status, and ends with it
        self.positions = positions
        self._runs: dict[str, JobRun] = {}  # insertion order = submission order

    # --- the unfinished jobs ---------------------------------------------------------

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._runs

    def __getitem__(self, job_id: str) -> JobRun:
        return self._runs[job_id]

    def get(self, job_id: str | None) -> JobRun | None:
        return self._runs.get(job_id) if job_id is not None else None

    def runs(self) -> list[JobRun]:
        """The unfinished jobs, oldest submission first."""
        return list(self._runs.values())

    def resume(self, row: JobRow) -> JobRun:
        """Take up a job the progress log recorded as unfinished (after a restart)."""
        run = self._runs[row.job_id] = JobRun(row, planned=row.units_total is not None)
        return run

    # --- queries for the control server (same thread, read-only) -------------------

    def status_of(self, row: JobRow, positions: Mapping[str, int] | None = None) -> JobStatus:
        """The job's status; `positions` are the queue's (`self.positions()`), taken
        once for many rows, or here if the job is queued and none are given."""
        run = self._runs.get(row.job_id)
        waiting = self.space.reason(row.job_id)
        if run is not None and waiting is None:
            waiting = self.progress.disk_full  # its next write may wait for space
        if positions is None and self._queued(row):
            positions = self.positions()
        position = positions.get(row.job_id) if positions is not None else None
        return job_status(row, run, waiting, position)

    def statuses_of(self, rows: Iterable[JobRow]) -> list[JobStatus]:
        """The status of each job (`list`): the queue is looked at once for them all."""
        rows = list(rows)
        positions = self.positions() if any(self._queued(row) for row in rows) else {}
        return [self.status_of(row, positions) for row in rows]

    def _queued(self, row: JobRow) -> bool:
        run = self._runs.get(row.job_id)
        return run is not None and run.row.state == JobState.QUEUED

    def busy_outputs(self) -> set[str]:
        """Output directories an unfinished job writes to."""
        return {run.row.output for run in self._runs.values()}

    # --- the writes of a job's row -----------------------------------------------------

    async def create(self, job: NewJob) -> JobRun:
        run = JobRun(await self.progress.create_job(job), planned=False)
        self._runs[run.job_id] = run
        self.publish_state(run)
        return run

    async def fingerprint_input(self, run: JobRun) -> None:
        """Record the input as it is now, for good (a replayed plan and every unit
        compare it), unless it is recorded already or cannot be read (then planning
        fails, saying which file is missing)."""
        if run.row.input_fingerprint is None:
            taken = await asyncio.to_thread(fingerprint_if_readable, run.row.inputs)
            if taken is not None:
                run.row = await self.progress.fingerprint_input(run.job_id, taken)

    async def finish_planning(
        self,
        run: JobRun,
        records_total: int,
        units_total: int,
        gzip_indexes: Sequence[GzipIndex | None] = (),
    ) -> None:
        """Close the plan with the planner's totals and each gzip input's seek-point
        index; raises ConflictError if the totals do not match the units it recorded."""
        run.row = await self.progress.finish_planning(
            run.job_id, records_total, units_total, gzip_indexes
        )
        run.planned = True

    async def set_state(
        self,
        run: JobRun,
        state: JobState,
        error: str | None = None,
        code: ErrorCode | None = None,
    ) -> None:
        run.row = await self.progress.set_job_state(run.job_id, state, error, code)
        self.publish_state(run)

    async def record_part(self, ack: Checkpoint) -> bool:
        """Record a verified part in one transaction (the part, the job's counters, the
        unit done or not, its failures cleared); False for a retried ack, which counts
        nothing. Raises PartRejected for a part that must not be recorded."""
        outcome = await self.progress.record_part(PartRecord.from_ack(ack))
        if (run := self._runs.get(ack.job_id)) is not None:
            run.row = outcome.job
        return outcome.recorded

    async def add_restart(self, run: JobRun, lost_records: int) -> None:
        """Count a worker death of the job, and the records it computes again."""
        run.row = await self.progress.add_restart(run.job_id, lost_records)

    async def delete_parts(self, run: JobRun, unit_id: int, first_record: int) -> None:
        """Forget the unit's parts from `first_record` on, their files included; the
        unit is pending again (its records count as recomputed)."""
        removed, run.row = await self.progress.delete_parts(run.job_id, unit_id, first_record)
        await asyncio.to_thread(job_files.unlink_all, [part.path for part in removed])

    async def finish(
        self,
        run: JobRun,
        state: JobState,
        error: str | None = None,
        code: ErrorCode | None = None,
    ) -> None:
        """Record a terminal state and drop the job: its planning or assembly stops, its
        wait for space ends, its directory goes (parts and all). Its units must be
        taken back from their workers first. `code` says a failure is the user's to
        fix (`virnucctl wait` exits 4 for it)."""
        run.stop_task()
        self.space.cancel(run.job_id)
        await self.set_state(run, state, error, code)
        self._runs.pop(run.job_id, None)
        await asyncio.to_thread(job_files.remove_job_dir, self.config.job_dir(run.job_id))
        log.info("job.finished", job_id=run.job_id, state=state, error=error)

    async def stop_tasks(self) -> None:
        """Stop every job's planning or assembly and wait for them (at shutdown)."""
        for run in self._runs.values():
            run.stop_task()
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- events --------------------------------------------------------------------------

    def publish_state(self, run: JobRun) -> None:
        self.events.publish(job_event("state", self.status_of(run.row)))

    def publish_progress(self, run: JobRun) -> None:
        self.events.publish(job_event("progress", self.status_of(run.row)))
