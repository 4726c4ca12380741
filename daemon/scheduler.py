"""The scheduler: jobs -> work units -> idle workers, and every job state change.

It is the only actor that changes a job's state. Jobs are served first in, first out:
the oldest job with a pending unit gets the next idle worker, preferring a worker
whose loaded models already match. A unit always starts at its *resume point*, the
end of its last part recorded in SQLite, so a dead worker's unit continues where its
last durable checkpoint ended.

Progress shown to users = records recorded in SQLite + records computed since by
the worker on the unit (from `batch_done`); only the first is durable.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from virnuc.faults import Faults
from virnuc.model_wire import spec_to_wire
from virnuc.protocol import (
    Assign,
    Cancel,
    JobState,
    JobStatus,
    WorkerState,
    job_event,
)

from . import scheduler_messages as sm
from .actor import Actor
from .assembler import AssemblyCancelled, PartNeedsRecompute, assemble
from .config import DaemonConfig
from .planner import PlanningCancelled, plan_job
from .progress_log import ConflictError, JobRow, ProgressLog, UnitRow
from .publisher import EventPublisher
from .supervisor import Assignment, WorkerSupervisor
from .worker_hub import WorkerHub

log = structlog.get_logger()

PAGE = 64  # pending units fetched from SQLite at a time
PROGRESS_EVENT_INTERVAL = 0.5


class JobNotFound(LookupError):
    """Raised (into a handler's future) for a job id the progress log does not know."""


class JobFinished(Exception):
    """Raised (into a handler's future) when an operation needs an unfinished job."""


@dataclass
class JobRun:
    """What the scheduler keeps in memory about one unfinished job (never its units)."""

    row: JobRow
    planned: bool
    cancel: threading.Event = field(default_factory=threading.Event)
    pending: deque[UnitRow] = field(default_factory=deque)
    running: dict[int, str] = field(default_factory=dict)  # unit -> worker
    live: dict[int, tuple[int, int]] = field(default_factory=dict)  # unit -> unrecorded work
    task: asyncio.Task[None] | None = None  # planning or assembly
    last_event: float = 0.0

    @property
    def job_id(self) -> str:
        return self.row.job_id


class Scheduler(Actor[Any]):
    name = "scheduler"

    def __init__(
        self, config: DaemonConfig, progress: ProgressLog, hub: WorkerHub, events: EventPublisher
    ):
        super().__init__(inbox_size=10_000)
        self.config = config
        self.progress = progress
        self.hub = hub
        self.events = events
        self.workers: dict[str, WorkerSupervisor] = {}
        self.jobs: dict[str, JobRun] = {}  # insertion order = submission order
        self.accepting = True
        self.faults = Faults.from_env()  # crash tests only; inert when unset
        self._recorded: dict[str, tuple[int, int]] = {}  # worker -> recorded since assign
        # Output dirs claimed by a submit whose job is not in `jobs` yet: output -> job id.
        self._claimed: dict[str, str] = {}

    # --- queries for the control server (same thread, read-only) -------------------

    def status_of(self, row: JobRow) -> JobStatus:
        run = self.jobs.get(row.job_id)
        extra_records = sum(r for r, _ in run.live.values()) if run else 0
        extra_frames = sum(f for _, f in run.live.values()) if run else 0
        status = JobStatus(
            job_id=row.job_id,
            state=JobState(row.state),
            records_total=row.records_total or 0,
            records_done=min(row.records_done + extra_records, row.records_total or 0),
            frames_done=row.frames_done + extra_frames,
            restarts=row.restarts,
            input=row.input,
            output=row.output,
        )
        status["records_recomputed"] = row.records_recomputed
        if row.error:
            status["error"] = row.error
        return status

    def busy_outputs(self) -> set[str]:
        """Output directories an unfinished (or just submitted) job writes to."""
        return {run.row.output for run in self.jobs.values()} | set(self._claimed)

    def claim_output(self, output: str, job_id: str) -> bool:
        """Reserve `output` for a job being submitted; False if another job has it."""
        if output in self.busy_outputs():
            return False
        self._claimed[output] = job_id
        return True

    def release_output(self, output: str, job_id: str) -> None:
        """Drop a claim: the job is in `jobs` now, or its submission failed."""
        if self._claimed.get(output) == job_id:
            del self._claimed[output]

    # --- lifecycle ---------------------------------------------------------------------

    async def setup(self) -> None:
        """Resume every unfinished job recorded in SQLite (after a crash or a stop)."""
        await self.progress.reset_running_units()
        unfinished = await self.progress.unfinished_jobs()
        await asyncio.to_thread(self._sweep_ended_jobs, {row.job_id for row in unfinished})
        for row in unfinished:
            run = JobRun(row, planned=row.units_total is not None)
            self.jobs[row.job_id] = run
            if not run.planned:
                self._start_planning(run)
            elif row.state == JobState.ASSEMBLING:
                self._start_assembly(run)
            else:
                await self._remove_unrecorded_parts(run)
                await self._assemble_if_complete(run)  # died between last part and assembly
            log.info("job.resumed", job_id=row.job_id, state=row.state)

    def _sweep_ended_jobs(self, unfinished: set[str]) -> None:
        """Remove the part directories of jobs that ended (a crash can leave them)."""
        jobs = self.config.state_dir / "jobs"
        for job_dir in jobs.iterdir() if jobs.is_dir() else []:
            if job_dir.name not in unfinished:
                shutil.rmtree(job_dir, ignore_errors=True)

    async def teardown(self) -> None:
        for run in self.jobs.values():
            run.cancel.set()
            if run.task is not None:
                run.task.cancel()
        tasks = [run.task for run in self.jobs.values() if run.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def handle(self, message: Any) -> None:
        match message:
            case sm.JobSubmitted(job_id):
                await self._job_submitted(job_id)
            case sm.PlanFinished(job_id, error):
                await self._plan_finished(job_id, error)
            case sm.WorkerUp():
                pass
            case sm.WorkerDown(worker_id, reason):
                await self._worker_down(worker_id, reason)
            case sm.Progress(worker_id, batch):
                self._progress(
                    worker_id, batch.job_id, batch.unit_id, batch.records_done, batch.frames_done
                )
            case sm.PartRecorded(worker_id, ack, _):
                await self._part_recorded(
                    worker_id, ack.job_id, ack.unit_id, ack.record_count, ack.frames
                )
            case sm.PartRefused(worker_id, ack, problem):
                await self._part_refused(worker_id, ack.job_id, ack.unit_id, problem)
            case sm.UnitFinished(worker_id, done):
                await self._unit_finished(worker_id, done.job_id, done.unit_id)
            case sm.UnitFailed(worker_id, error):
                await self._unit_failed(
                    worker_id, error.job_id, error.unit_id, error.message, error.fatal
                )
            case sm.AssemblyFinished(job_id, error, corrupt):
                await self._assembly_finished(job_id, error, corrupt)
            case sm.KillJob(job_id, reply):
                await self._kill(job_id, reply)
        if self.accepting:
            await self._dispatch()

    # --- jobs ----------------------------------------------------------------------------

    async def _job_submitted(self, job_id: str) -> None:
        row = await self.progress.get_job(job_id)
        if row is None:
            return
        run = JobRun(row, planned=False)
        self.jobs[job_id] = run
        self.release_output(row.output, job_id)  # `jobs` holds it from now on
        self._publish_state(run)
        self._start_planning(run)

    def _start_planning(self, run: JobRun) -> None:
        async def planning() -> None:
            error = None
            try:
                await plan_job(
                    self.progress,
                    run.row,
                    workers=len(self.workers) or 1,
                    max_records=self.config.unit_records,
                    cancel=run.cancel,
                )
            except PlanningCancelled:
                return
            except (ValueError, OSError, ConflictError) as exc:
                error = str(exc)
            except Exception as exc:  # a bug must fail the job, not leave it queued forever
                log.exception("planning.crashed", job_id=run.job_id)
                error = f"internal error while planning ({type(exc).__name__}: {exc})"
            await self.tell(sm.PlanFinished(run.job_id, error))

        run.task = asyncio.create_task(planning(), name=f"plan-{run.job_id}")

    async def _plan_finished(self, job_id: str, error: str | None) -> None:
        run = self.jobs.get(job_id)
        if run is None:
            return
        run.task = None
        if error is not None:
            await self._finish(run, JobState.FAILED, f"invalid input: {error}")
            return
        run.planned = True
        await self._refresh(run)

    async def _refresh(self, run: JobRun) -> None:
        row = await self.progress.get_job(run.job_id)
        if row is not None:
            run.row = row

    async def _set_state(self, run: JobRun, state: JobState, error: str | None = None) -> None:
        run.row = await self.progress.set_job_state(run.job_id, state, error)
        self._publish_state(run)

    def _publish_state(self, run: JobRun) -> None:
        self.events.publish(job_event("state", self.status_of(run.row)))

    async def _finish(self, run: JobRun, state: JobState, error: str | None = None) -> None:
        """Enter a terminal state: stop its units everywhere and drop its parts."""
        run.cancel.set()
        if run.task is not None and run.task is not asyncio.current_task():
            run.task.cancel()
        for worker_id in list(run.running.values()):
            await self._release(worker_id, cancel=True)
        await self._set_state(run, state, error)
        self.jobs.pop(run.job_id, None)
        job_dir = self.config.job_dir(run.job_id)
        await asyncio.to_thread(shutil.rmtree, job_dir, True)
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
            if supervisor.state != WorkerState.IDLE or supervisor.assignment is not None:
                continue
            picked = await self._next_unit(supervisor)
            if picked is None:
                return
            await self._assign(supervisor, *picked)

    async def _next_unit(self, supervisor: WorkerSupervisor) -> tuple[JobRun, UnitRow] | None:
        """The oldest job's next unit, preferring jobs whose models this worker holds."""
        candidates = [run for run in self.jobs.values() if run.planned and run.task is None]
        warm = [run for run in candidates if supervisor.models == run.row.spec]
        for run in warm + [run for run in candidates if run not in warm]:
            if not run.pending:
                run.pending.extend(await self.progress.pending_units(run.job_id, PAGE))
            while run.pending:
                unit = run.pending.popleft()
                if unit.unit_id not in run.running:
                    return run, unit
        return None

    async def _assign(self, supervisor: WorkerSupervisor, run: JobRun, unit: UnitRow) -> None:
        record, offset = await self.progress.resume_point(run.job_id, unit.unit_id)
        parts_dir = self.config.job_dir(run.job_id) / "parts"
        await asyncio.to_thread(parts_dir.mkdir, parents=True, exist_ok=True)
        await self._remove_unrecorded_parts(run, unit.unit_id)
        await self.progress.set_unit_state(run.job_id, unit.unit_id, "running")
        if run.row.state == JobState.QUEUED:
            await self._set_state(run, JobState.RUNNING)
        run.running[unit.unit_id] = supervisor.worker_id
        self._recorded[supervisor.worker_id] = (0, 0)
        assignment = Assignment(
            run.job_id, unit.unit_id, unit.first_record, record, unit.end_record
        )
        supervisor.set_state(WorkerState.BUSY, assignment)
        assign = Assign(
            job_id=run.job_id,
            unit_id=unit.unit_id,
            input=run.row.input,
            start_offset=offset,
            start_record=record,
            record_count=unit.end_record - record,
            models=spec_to_wire(run.row.spec),
            save_embeddings=run.row.save_embeddings,
            checkpoint_every=run.row.checkpoint_every,
            parts_dir=str(parts_dir),
        )
        log.info(
            "unit.assigned",
            job_id=run.job_id,
            unit=unit.unit_id,
            worker=supervisor.worker_id,
            start_record=record,
            records=assign.record_count,
        )
        if not await self.hub.send(supervisor.worker_id, assign):
            await self._release(supervisor.worker_id)  # it died meanwhile; WorkerDown follows
            await self.progress.set_unit_state(run.job_id, unit.unit_id, "pending")

    async def _release(self, worker_id: str, *, cancel: bool = False) -> Assignment | None:
        """Free a worker from its unit (telling it to drop the unit if `cancel`)."""
        supervisor = self.workers[worker_id]
        assignment = supervisor.assignment
        if assignment is None:
            return None
        run = self.jobs.get(assignment.job_id)
        if run is not None:
            run.running.pop(assignment.unit_id, None)
            run.live.pop(assignment.unit_id, None)
        if cancel:
            await self.hub.send(worker_id, Cancel(job_id=assignment.job_id))
        if supervisor.state == WorkerState.BUSY:
            supervisor.set_state(WorkerState.IDLE)
        else:
            supervisor.assignment = None
        return assignment

    def _current(self, worker_id: str, job_id: str | None, unit_id: int | None) -> JobRun | None:
        """The job of a worker message, if it is about the worker's current unit."""
        assignment = self.workers[worker_id].assignment
        if assignment is None or (assignment.job_id, assignment.unit_id) != (job_id, unit_id):
            return None  # late news about a unit the worker no longer holds
        return self.jobs.get(assignment.job_id)

    def _progress(
        self, worker_id: str, job_id: str, unit_id: int, records: int, frames: int
    ) -> None:
        run = self._current(worker_id, job_id, unit_id)
        if run is None:
            return
        recorded_records, recorded_frames = self._recorded.get(worker_id, (0, 0))
        run.live[unit_id] = (max(0, records - recorded_records), max(0, frames - recorded_frames))
        now = time.monotonic()
        if now - run.last_event >= PROGRESS_EVENT_INTERVAL:
            run.last_event = now
            self.events.publish(job_event("progress", self.status_of(run.row)))

    async def _part_recorded(
        self, worker_id: str, job_id: str, unit_id: int, records: int, frames: int
    ) -> None:
        run = self._current(worker_id, job_id, unit_id)
        if run is None:
            return
        done_records, done_frames = self._recorded.get(worker_id, (0, 0))
        self._recorded[worker_id] = (done_records + records, done_frames + frames)
        live_records, live_frames = run.live.get(unit_id, (0, 0))
        run.live[unit_id] = (max(0, live_records - records), max(0, live_frames - frames))
        await self.progress.clear_unit_failures(job_id, unit_id)
        await self._refresh(run)
        self.events.publish(job_event("progress", self.status_of(run.row)))

    def _unrecorded_records(self, worker_id: str) -> int:
        """Records the worker computed on its unit that no recorded part holds."""
        assignment = self.workers[worker_id].assignment
        run = self.jobs.get(assignment.job_id) if assignment else None
        if assignment is None or run is None:
            return 0
        return run.live.get(assignment.unit_id, (0, 0))[0]

    async def _unit_finished(self, worker_id: str, job_id: str, unit_id: int) -> None:
        run = self._current(worker_id, job_id, unit_id)
        assignment = await self._release(worker_id)
        if run is None or assignment is None:
            return
        if await self.progress.resume_offset(job_id, unit_id) < assignment.end_record:
            await self.progress.set_unit_state(job_id, unit_id, "pending")  # came back short
        else:
            await self._assemble_if_complete(run)

    async def _assemble_if_complete(self, run: JobRun) -> None:
        if run.planned and not run.running and await self.progress.units_remaining(run.job_id) == 0:
            await self._set_state(run, JobState.ASSEMBLING)
            self._start_assembly(run)

    async def _part_refused(self, worker_id: str, job_id: str, unit_id: int, problem: str) -> None:
        run = self._current(worker_id, job_id, unit_id)
        if run is None:
            if job_id not in self.jobs:  # a late part of an ended job: leave no trace
                await asyncio.to_thread(shutil.rmtree, self.config.job_dir(job_id), True)
            return
        await self.progress.log_event("part.refused", problem, job_id=job_id, worker_id=worker_id)
        await self._release(worker_id, cancel=True)
        await self.progress.set_unit_state(job_id, unit_id, "pending")

    async def _unit_failed(
        self, worker_id: str, job_id: str | None, unit_id: int | None, message: str, fatal: bool
    ) -> None:
        run = self._current(worker_id, job_id, unit_id)
        if run is None or fatal:
            return  # a fatal error ends the process; its death is handled as such
        await self._release(worker_id)
        await self._finish(run, JobState.FAILED, f"unit {unit_id}: {message}")

    async def _worker_down(self, worker_id: str, reason: str) -> None:
        lost = self._unrecorded_records(worker_id)
        assignment = await self._release(worker_id)
        if assignment is None:
            return
        run = self.jobs.get(assignment.job_id)
        if run is None:
            return
        job_id, unit_id = assignment.job_id, assignment.unit_id
        if not self.accepting:  # a worker stopping with the daemon did nothing wrong
            await self.progress.set_unit_state(job_id, unit_id, "pending")
            return
        failures = await self.progress.note_worker_death(job_id, unit_id)
        await self.progress.add_restart(job_id, lost)
        await self.progress.log_event("worker.died", reason, job_id=job_id, worker_id=worker_id)
        if failures >= self.config.max_unit_failures:
            records = f"records {assignment.first_record}..{assignment.end_record - 1}"
            await self._finish(
                run,
                JobState.FAILED,
                f"unit {unit_id} ({records} of the input) killed its worker "
                f"{failures} times in a row; last: {reason}",
            )
            return
        await self.progress.set_unit_state(job_id, unit_id, "pending")
        await self._refresh(run)

    # --- parts on disk -------------------------------------------------------------------

    async def _remove_unrecorded_parts(self, run: JobRun, unit_id: int | None = None) -> None:
        """What SQLite does not record does not exist: delete such part files."""
        parts_dir = self.config.job_dir(run.job_id) / "parts"
        if unit_id is None:
            recorded = {row.path async for row in self.progress.iter_parts(run.job_id)}
        else:  # at each assignment: only this unit's rows, not the whole job's
            recorded = {row.path for row in await self.progress.parts_of_unit(run.job_id, unit_id)}
        prefix = "" if unit_id is None else f"u{unit_id:06d}-"

        def sweep() -> int:
            removed = 0
            for path in parts_dir.glob("*") if parts_dir.is_dir() else []:
                name = path.name.lstrip(".")
                if name.startswith(prefix) and str(path) not in recorded:
                    path.unlink(missing_ok=True)
                    removed += 1
            return removed

        if removed := await asyncio.to_thread(sweep):
            log.info("parts.unrecorded_removed", job_id=run.job_id, count=removed)

    # --- assembly -----------------------------------------------------------------------

    def _start_assembly(self, run: JobRun) -> None:
        async def assembling() -> None:
            try:
                await assemble(self.progress, run.row, run.cancel, self.faults)
            except AssemblyCancelled:
                return
            except PartNeedsRecompute as exc:
                await self.tell(
                    sm.AssemblyFinished(run.job_id, None, (exc.unit_id, exc.first_record))
                )
                log.warning("assembly.part_rejected", job_id=run.job_id, reason=str(exc))
                return
            except Exception as exc:  # disk full, a bug: the job fails with the reason
                log.exception("assembly.failed", job_id=run.job_id)
                await self.tell(
                    sm.AssemblyFinished(run.job_id, f"writing the outputs failed: {exc}")
                )
                return
            await self.tell(sm.AssemblyFinished(run.job_id))

        run.task = asyncio.create_task(assembling(), name=f"assemble-{run.job_id}")

    async def _assembly_finished(
        self, job_id: str, error: str | None, corrupt: tuple[int, int] | None
    ) -> None:
        run = self.jobs.get(job_id)
        if run is None:
            return
        run.task = None
        if corrupt is not None:
            unit_id, first_record = corrupt
            removed = await self.progress.delete_parts(job_id, unit_id, first_record)
            await asyncio.to_thread(_unlink_all, [Path(part.path) for part in removed])
            await self._set_state(run, JobState.RUNNING)
            run.pending.clear()
            return
        if error is not None:
            await self._finish(run, JobState.FAILED, error)
            return
        await self._finish(run, JobState.DONE)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
