"""The scheduler: jobs -> work units -> idle workers, and every job state change.

It is the only actor that changes a job's state, from its creation on; it asks a
worker's supervisor to assign or cancel a unit and never talks to a worker itself
(docs/architecture.md §2). Its copy of each job row is kept current from what its
own writes return, never re-read. Jobs are served first in, first out:
the oldest job with a pending unit gets the next idle worker, preferring a worker
whose loaded models already match. A unit always starts at its *resume point*, the
end of its last part recorded in SQLite, so a dead worker's unit continues where its
last durable checkpoint ended.

Progress shown to users = records recorded in SQLite + records computed since by
the worker on the unit (from `batch_done`); only the first is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

import structlog

from virnuc.disk_space import free_bytes
from virnuc.faults import Faults
from virnuc.protocol import (
    BatchDone,
    Checkpoint,
    ErrorCode,
    JobState,
    JobStatus,
    WorkerError,
    job_event,
)

from .. import scheduler_messages as sm
from ..actor import Actor, Stopping
from ..config import DaemonConfig
from ..progress.log import JobRow, NewJob, ProgressLog, UnitRow
from ..publisher import EventPublisher
from ..scheduler_messages import Assignment
from ..slots.launcher import PilotDemand
from ..slots.supervisor import WorkerSupervisor
from . import files as job_files
from . import parts_sweep
from . import tasks as job_tasks
from .input_check import InputChanged, check_unchanged
from .run import JobRun, assign_message, job_status
from .space_wait import SpaceWaits
from .submission import SubmitRefused, output_busy

log = structlog.get_logger()

PAGE = 64  # pending units fetched from SQLite at a time
PROGRESS_EVENT_INTERVAL = 0.5


class JobNotFound(LookupError):
    """Raised (into a handler's future) for a job id the progress log does not know."""


class JobFinished(Exception):
    """Raised (into a handler's future) when an operation needs an unfinished job."""


class Scheduler(Actor[Any]):
    name = "scheduler"

    def __init__(
        self,
        config: DaemonConfig,
        progress: ProgressLog,
        events: EventPublisher,
        *,
        slots: Callable[[Actor[Any]], Iterable[WorkerSupervisor]],
        demand: PilotDemand | None = None,
    ):
        """`slots` builds the worker slots' supervisors, given this scheduler to tell
        what their workers do. The two need each other; built here, by this factory,
        each gets the other at construction and nothing wires them up afterwards.
        `demand` is told how many units wait (a launcher that starts Slurm pilots)."""
        super().__init__(inbox_size=10_000)
        self.config = config
        self.progress = progress
        self.events = events
        self.demand = demand
        self.jobs: dict[str, JobRun] = {}  # insertion order = submission order
        self.accepting = True  # until `stop_accepting`: shutdown has begun
        self.space = SpaceWaits(
            config.space_retry,
            config.space_retry_max,
            lambda job_id: self.tell(sm.SpaceCheck(job_id)),
        )
        self.faults = Faults.from_env()  # crash tests only; inert when unset
        self.workers = {supervisor.worker_id: supervisor for supervisor in slots(self)}

    # --- queries for the control server (same thread, read-only) -------------------

    def status_of(self, row: JobRow) -> JobStatus:
        run = self.jobs.get(row.job_id)
        waiting = self.space.reason(row.job_id)
        if run is not None and waiting is None:
            waiting = self.progress.disk_full  # its next write may wait for space
        return job_status(row, run, waiting)

    def busy_outputs(self) -> set[str]:
        """Output directories an unfinished job writes to."""
        return {run.row.output for run in self.jobs.values()}

    # --- lifecycle ---------------------------------------------------------------------

    async def stop_accepting(self) -> None:
        """Shutdown's first step: new submits are refused, and a unit whose worker stops
        with the daemon goes back to pending without counting as a death. Through the
        inbox, so the `WorkerDown`s of the stopping workers come after it."""
        with contextlib.suppress(Stopping):  # it never started: nothing to refuse
            await self.tell(sm.StopAccepting())

    async def setup(self) -> None:
        """Resume every unfinished job recorded in SQLite (after a crash or a stop)."""
        await self.progress.reset_running_units()
        unfinished = await self.progress.unfinished_jobs()
        await parts_sweep.sweep_job_dirs(self.config, self.progress, {r.job_id for r in unfinished})
        for row in unfinished:
            run = JobRun(row, planned=row.units_total is not None)
            self.jobs[row.job_id] = run
            if not run.planned:
                self._start_planning(run)
            elif row.state == JobState.ASSEMBLING:
                self._start_assembly(run)
            else:
                await parts_sweep.remove_unrecorded_parts(self.config, self.progress, run.job_id)
                await self._assemble_if_complete(run)  # died between last part and assembly
            log.info("job.resumed", job_id=row.job_id, state=row.state)

    async def teardown(self) -> None:
        for run in self.jobs.values():
            run.cancel.set()
            if run.task is not None:
                run.task.cancel()
        self.space.cancel_all()
        tasks = [run.task for run in self.jobs.values() if run.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def handle(self, message: Any) -> None:
        match message:
            case sm.SubmitJob(job, reply):
                await self._submit(job, reply)
            case sm.PlanFinished(job_id, error, code):
                await self._plan_finished(job_id, error, code)
            case sm.WorkerUp():
                pass
            case sm.WorkerDown(worker_id, reason, lost, blameless):
                await self._worker_down(worker_id, reason, lost, blameless)
            case sm.WorkersCannotStart(worker_id, reason):
                await self._workers_cannot_start(worker_id, reason)
            case sm.Progress(worker_id, batch):
                self._progress(worker_id, batch)
            case sm.PartRecorded(worker_id, ack, recorded):
                await self._part_recorded(worker_id, ack, recorded)
            case sm.PartRefused(worker_id, ack, problem):
                await self._part_refused(worker_id, ack.job_id, ack.unit_id, problem)
            case sm.UnitFinished(worker_id, done):
                await self._unit_finished(worker_id, done.job_id, done.unit_id)
            case sm.ErrorReported(worker_id, error):
                await self._unit_failed(worker_id, error)
            case sm.AssemblyFinished(job_id, error, corrupt, code):
                await self._assembly_finished(job_id, error, corrupt, code)
            case sm.OutOfSpace(job_id, path, needed) if job_id in self.jobs:
                self.jobs[job_id].task = None  # assembly stopped: it sent this
                await self._wait_for_space(self.jobs[job_id], path, needed)
            case sm.SpaceCheck(job_id):
                await self._space_check(job_id)
            case sm.KillJob(job_id, reply):
                await self._kill(job_id, reply)
            case sm.StopAccepting():
                self.accepting = False
        if self.accepting:
            await self._dispatch()
            await self._tell_demand()

    # --- jobs ----------------------------------------------------------------------------

    async def _submit(self, job: NewJob, reply: asyncio.Future[Any]) -> None:
        """Create the job and start planning it; one at a time, so of two submits into
        one output directory only the first can pass."""
        if not self.accepting:
            refusal = "virnucd is shutting down; submit again after restart"
            reply.set_exception(SubmitRefused(ErrorCode.STOPPING, refusal))
            return
        if job.output in self.busy_outputs():
            reply.set_exception(output_busy(job.output))
            return
        try:
            row = await self.progress.create_job(job)
        except Exception as exc:  # the handler answers it (e.g. a full state disk)
            reply.set_exception(exc)
            return
        run = JobRun(row, planned=False)
        self.jobs[row.job_id] = run
        self._publish_state(run)
        self._start_planning(run)
        reply.set_result(row)

    def _start_planning(self, run: JobRun) -> None:
        work = job_tasks.planning(
            self.progress,
            run.row,
            workers=len(self.workers) or 1,
            max_records=self.config.unit_records,
            cancel=run.cancel,
        )
        self._run_task(run, work, f"plan-{run.job_id}")

    def _run_task(self, run: JobRun, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run a job's planning or assembly; its outcome comes back as a message."""

        async def report() -> None:
            if (outcome := await work) is not None:
                await self.tell(outcome)

        run.task = asyncio.create_task(report(), name=name)

    async def _plan_finished(self, job_id: str, error: str | None, code: ErrorCode | None) -> None:
        run = self.jobs.get(job_id)
        if run is None:
            return
        run.task = None
        if error is not None:
            await self._finish(run, JobState.FAILED, error, code)
            return
        run.planned = True
        row = await self.progress.get_job(run.job_id)  # the totals the planner recorded
        if row is not None:
            run.row = row

    async def _set_state(
        self,
        run: JobRun,
        state: JobState,
        error: str | None = None,
        code: ErrorCode | None = None,
    ) -> None:
        run.row = await self.progress.set_job_state(run.job_id, state, error, code)
        self._publish_state(run)

    def _publish_state(self, run: JobRun) -> None:
        self.events.publish(job_event("state", self.status_of(run.row)))

    async def _finish(
        self,
        run: JobRun,
        state: JobState,
        error: str | None = None,
        code: ErrorCode | None = None,
    ) -> None:
        """Enter a terminal state: stop its units everywhere and drop its parts. `code`
        says a failure is the user's to fix (`virnucctl wait` exits 4 for it)."""
        run.cancel.set()
        if run.task is not None and run.task is not asyncio.current_task():
            run.task.cancel()
        self.space.cancel(run.job_id)
        for unit_id in list(run.running):
            await self._release(run, unit_id, cancel=True)
        await self._set_state(run, state, error, code)
        self.jobs.pop(run.job_id, None)
        await asyncio.to_thread(job_files.remove_job_dir, self.config.job_dir(run.job_id))
        log.info("job.finished", job_id=run.job_id, state=state, error=error)

    async def _kill(self, job_id: str, reply: asyncio.Future[Any]) -> None:
        run = self.jobs.get(job_id)
        if run is None:
            row = await self.progress.get_job(job_id)
            exc: Exception = JobNotFound(job_id) if row is None else JobFinished(row.state)
            reply.set_exception(exc)
            return
        await self._finish(run, JobState.KILLED, None)
        if not reply.done():
            reply.set_result({"job_id": job_id, "state": JobState.KILLED.value})

    # --- units and workers ------------------------------------------------------------

    async def _dispatch(self) -> None:
        for supervisor in self.workers.values():
            if not supervisor.idle:
                continue
            picked = await self._next_unit(supervisor)
            if picked is None:
                return
            await self._assign(supervisor, *picked)

    def _runnable(self) -> list[JobRun]:
        """Jobs whose units may be handed out now (planned, not assembling, not
        waiting for disk space)."""
        return [
            run
            for run in self.jobs.values()
            if run.planned and run.task is None and run.job_id not in self.space
        ]

    async def _next_unit(self, supervisor: WorkerSupervisor) -> tuple[JobRun, UnitRow] | None:
        """The oldest job's next unit, preferring jobs whose models this worker holds."""
        candidates = self._runnable()
        warm = [run for run in candidates if supervisor.models == run.row.spec]
        for run in warm + [run for run in candidates if run not in warm]:
            await self._fetch_pending(run)
            while run.pending:
                unit = run.pending.popleft()
                if unit.unit_id not in run.running:
                    return run, unit
        return None

    async def _fetch_pending(self, run: JobRun) -> None:
        if not run.pending:
            run.pending.extend(await self.progress.pending_units(run.job_id, PAGE))

    async def _waiting_units(self, run: JobRun) -> int:
        await self._fetch_pending(run)
        return sum(1 for unit in run.pending if unit.unit_id not in run.running)

    async def _tell_demand(self) -> None:
        """How many units wait for a worker (at most a page per job: enough to size a
        wave of pilots), for a launcher that starts workers on demand."""
        if self.demand is not None:
            waiting = [await self._waiting_units(run) for run in self._runnable()]
            self.demand.set_waiting(sum(waiting))

    async def _workers_cannot_start(self, worker_id: str, reason: str) -> None:
        """No worker could run for the jobs that wait for one: fail each of them that
        nothing computes, with the reason (Slurm's), instead of waiting for good."""
        for run in self._runnable():
            if not run.running and await self._waiting_units(run):
                await self._finish(run, JobState.FAILED, f"no worker could start: {reason}")

    async def _assign(self, supervisor: WorkerSupervisor, run: JobRun, unit: UnitRow) -> None:
        if not await self._may_assign(run, unit):
            return
        resume = await self.progress.resume_point(run.job_id, unit.unit_id)
        parts_dir = self.config.job_dir(run.job_id) / "parts"
        await asyncio.to_thread(parts_dir.mkdir, parents=True, exist_ok=True)
        await parts_sweep.remove_unrecorded_parts(
            self.config, self.progress, run.job_id, unit.unit_id
        )
        await self.progress.set_unit_state(run.job_id, unit.unit_id, "running")
        if run.row.state == JobState.QUEUED:
            await self._set_state(run, JobState.RUNNING)
        assign = assign_message(run.row, unit, resume, parts_dir)
        assignment = Assignment(
            supervisor.worker_id,
            run.job_id,
            unit.unit_id,
            unit.first_record,
            assign.start_record,
            unit.end_record,
        )
        run.hand_out(assignment)
        log.info(
            "unit.assigned",
            job_id=run.job_id,
            unit=unit.unit_id,
            worker=supervisor.worker_id,
            start_record=assign.start_record,
            records=assign.record_count,
        )
        if not await supervisor.assign(assignment, assign):  # it died; WorkerDown follows
            run.take_back(unit.unit_id)
            await self.progress.set_unit_state(run.job_id, unit.unit_id, "pending")

    async def _may_assign(self, run: JobRun, unit: UnitRow) -> bool:
        """False when the unit must not start: the state disk is nearly full (the job
        waits, the unit goes back) or the input changed (the job fails)."""
        free = await asyncio.to_thread(free_bytes, self.config.jobs_dir)
        if free is not None and free < self.config.state_min_free:  # before a write fails
            run.pending.appendleft(unit)
            await self._wait_for_state_space(run)
            return False
        try:
            await asyncio.to_thread(check_unchanged, run.row.inputs, run.row.input_fingerprint)
        except InputChanged as exc:
            await self._finish(run, JobState.FAILED, str(exc), ErrorCode.INVALID_INPUT)
            return False
        return True

    async def _release(
        self, run: JobRun, unit_id: int, *, cancel: bool = False
    ) -> Assignment | None:
        """Take a unit back from its worker (asking it to drop the unit if `cancel`)."""
        assignment = run.take_back(unit_id)
        if assignment is not None:
            await self.workers[assignment.worker_id].release(assignment, cancel=cancel)
        return assignment

    def _current(self, worker_id: str, job_id: str | None, unit_id: int | None) -> JobRun | None:
        """The job of a worker message, if it is about a unit this worker holds."""
        run = self.jobs.get(job_id) if job_id is not None else None
        held = run.running.get(unit_id) if run is not None and unit_id is not None else None
        if held is None or held.worker_id != worker_id:
            return None  # late news about a unit the worker no longer holds
        return run

    def _progress(self, worker_id: str, batch: BatchDone) -> None:
        run = self._current(worker_id, batch.job_id, batch.unit_id)
        if run is None:
            return
        run.batch_done(batch.unit_id, batch.records_done, batch.frames_done)
        now = time.monotonic()
        if now - run.last_event >= PROGRESS_EVENT_INTERVAL:
            run.last_event = now
            self.events.publish(job_event("progress", self.status_of(run.row)))

    async def _part_recorded(self, worker_id: str, ack: Checkpoint, recorded: bool) -> None:
        run = self.jobs.get(ack.job_id)
        if run is None:
            return
        if recorded:  # durable now, whoever sent it: it counts
            run.count_part(ack.record_count, ack.frames)
        if self._current(worker_id, ack.job_id, ack.unit_id) is None:
            return
        run.part_recorded(ack.unit_id, ack.record_count, ack.frames)
        await self.progress.clear_unit_failures(ack.job_id, ack.unit_id)
        self.events.publish(job_event("progress", self.status_of(run.row)))

    async def _unit_finished(self, worker_id: str, job_id: str, unit_id: int) -> None:
        run = self._current(worker_id, job_id, unit_id)
        assignment = await self._release(run, unit_id) if run is not None else None
        if run is None or assignment is None:
            return
        if not await self._complete(run, assignment):
            await self.progress.set_unit_state(job_id, unit_id, "pending")  # came back short

    async def _complete(self, run: JobRun, assignment: Assignment) -> bool:
        """Whether all the unit's records are recorded; assembles after the last unit."""
        recorded_to = await self.progress.resume_offset(run.job_id, assignment.unit_id)
        if recorded_to < assignment.end_record:
            return False
        await self._assemble_if_complete(run)
        return True

    async def _assemble_if_complete(self, run: JobRun) -> None:
        if run.planned and not run.running and await self.progress.units_remaining(run.job_id) == 0:
            await self._set_state(run, JobState.ASSEMBLING)
            self._start_assembly(run)

    async def _part_refused(self, worker_id: str, job_id: str, unit_id: int, problem: str) -> None:
        run = self._current(worker_id, job_id, unit_id)
        if run is None:
            if job_id not in self.jobs:  # a late part of an ended job: leave no trace
                await asyncio.to_thread(job_files.remove_job_dir, self.config.job_dir(job_id))
            return
        await self.progress.log_event("part.refused", problem, job_id=job_id, worker_id=worker_id)
        await self._release(run, unit_id, cancel=True)
        await self.progress.set_unit_state(job_id, unit_id, "pending")

    async def _unit_failed(self, worker_id: str, error: WorkerError) -> None:
        run = self._current(worker_id, error.job_id, error.unit_id)
        if run is None or error.unit_id is None or error.fatal:
            return  # a fatal error ends the process; its death is handled as such
        await self._release(run, error.unit_id)
        if error.no_space:
            await self._unit_waits_for_space(run, error.unit_id)
            return
        code = ErrorCode.INVALID_INPUT if error.bad_input else None
        await self._finish(run, JobState.FAILED, f"unit {error.unit_id}: {error.message}", code)

    # --- a full disk ---------------------------------------------------------------------

    async def _unit_waits_for_space(self, run: JobRun, unit_id: int) -> None:
        """A unit stopped on a full state disk: its recorded parts stay, it is handed
        out again once there is room (the parts are on the state disk)."""
        run.pending.clear()  # re-read in order, this unit included
        await self._wait_for_state_space(run)
        await self.progress.set_unit_state(run.job_id, unit_id, "pending")

    async def _wait_for_state_space(self, run: JobRun) -> None:
        await self._wait_for_space(run, self.config.jobs_dir, self.config.state_min_free)

    async def _wait_for_space(self, run: JobRun, path: Path, needed: int) -> None:
        """Pause the job: nothing partial was left, what is verified stays."""
        if await self.space.start(run.job_id, path, needed):
            self._publish_state(run)

    async def _space_check(self, job_id: str) -> None:
        run = self.jobs.get(job_id)
        if run is None or not await self.space.check(job_id):
            return
        self._publish_state(run)
        if run.row.state == JobState.ASSEMBLING:
            self._start_assembly(run)
        # else its units are handed out again by the dispatch after this message

    async def _worker_down(
        self, worker_id: str, reason: str, lost: Assignment | None, blameless: bool = False
    ) -> None:
        """The worker died holding `lost`: resume the unit elsewhere from its last part,
        or fail the job when the unit keeps killing workers. A worker that left on
        purpose (`blameless`: preempted, or idle as the unit reached it) did the unit
        no harm."""
        run = self.jobs.get(lost.job_id) if lost is not None else None
        if lost is None or run is None or run.running.get(lost.unit_id) != lost:
            return  # it held no unit, or the unit came back from it already
        unrecorded = run.live.get(lost.unit_id, (0, 0))[0]  # records to compute again
        run.take_back(lost.unit_id)
        if await self._complete(run, lost):
            return  # it died after its last part was recorded: nothing was lost
        job_id, unit_id = lost.job_id, lost.unit_id
        if not self.accepting or blameless:  # a worker stopping with the daemon or
            await self.progress.set_unit_state(job_id, unit_id, "pending")  # preempted
            log.info("unit.released", job_id=job_id, unit=unit_id, reason=reason)
            return
        failures = await self.progress.note_worker_death(job_id, unit_id)
        await self.progress.add_restart(job_id, unrecorded)
        run.count_restart(unrecorded)
        await self.progress.log_event("worker.died", reason, job_id=job_id, worker_id=worker_id)
        if failures >= self.config.max_unit_failures:
            records = f"records {lost.first_record}..{lost.end_record - 1}"
            await self._finish(
                run,
                JobState.FAILED,
                f"unit {unit_id} ({records} of the input) killed its worker "
                f"{failures} times in a row; last: {reason}",
            )
            return
        await self.progress.set_unit_state(job_id, unit_id, "pending")

    # --- assembly -----------------------------------------------------------------------

    def _start_assembly(self, run: JobRun) -> None:
        work = job_tasks.assembly(self.progress, run.row, run.cancel, self.faults)
        self._run_task(run, work, f"assemble-{run.job_id}")

    async def _assembly_finished(
        self,
        job_id: str,
        error: str | None,
        corrupt: tuple[int, int] | None,
        code: ErrorCode | None,
    ) -> None:
        run = self.jobs.get(job_id)
        if run is None:
            return
        run.task = None
        if corrupt is not None:
            unit_id, first_record = corrupt
            removed = await self.progress.delete_parts(job_id, unit_id, first_record)
            await asyncio.to_thread(job_files.unlink_all, [part.path for part in removed])
            await self._set_state(run, JobState.RUNNING)
            run.pending.clear()
            return
        if error is not None:
            await self._finish(run, JobState.FAILED, error, code)
            return
        await self._finish(run, JobState.DONE)
