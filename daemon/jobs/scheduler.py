"""The scheduler: jobs -> work units -> idle workers, and every job state change.

It is the only actor that changes a job's state, from its creation on: it decides,
and its `JobBook` (daemon/jobs/book.py) records. It asks a worker's supervisor to
assign or cancel a unit and never talks to a worker itself (docs/architecture.md §2).
Which unit goes next is its `UnitQueue`'s choice (daemon/jobs/unit_queue.py).

Who writes which table of the progress log:

* `jobs`: this scheduler's `JobBook` alone (create_job, set_job_state,
  fingerprint_input, finish_planning, record_part, add_restart, delete_parts), from
  this actor's task. What others learn comes here as values in messages: the
  planner's totals in `PlanFinished`, a supervisor's verified part in `PartVerified`,
  the assembly's corrupt part in `AssemblyFinished`, its published outputs in
  `OutputsPublished` (the job is done: publishing is its commit point). Each of
  these writes returns the job's row as committed, and that is `JobRun.row`: the
  copy is replaced, never patched or re-read.
* `units`: the planner adds them (add_units); this scheduler and its `UnitQueue` set
  their state and count worker deaths; each part recorded clears its unit's failures,
  and its last marks it done, in the part's own transaction; deleting parts makes
  their unit pending.
* `parts`: the `JobBook` (record_part, delete_parts); each part is one transaction.
* `events`: the job writes above, and this scheduler's `log_event`.

Progress shown to users = records recorded in SQLite + records computed since by
the worker on the unit (from `batch_done`); only the first is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from virnuc.faults import Faults
from virnuc.protocol import (
    BatchDone,
    Checkpoint,
    ErrorCode,
    JobState,
    WorkerError,
)

from .. import scheduler_messages as sm
from ..actor import Actor, Stopping
from ..config import DaemonConfig
from ..progress.log import (
    ConflictError,
    NewJob,
    PartRejected,
    ProgressLog,
    UnitRow,
)
from ..publisher import EventPublisher
from ..scheduler_messages import Assignment
from ..slots.launcher import PilotDemand
from ..slots.supervisor import WorkerSupervisor
from . import files as job_files
from . import tasks as job_tasks
from .book import JobBook
from .input_check import InputChanged
from .run import JobRun, kills_its_workers
from .space_wait import SpaceWaits
from .submission import SubmitRefused, output_busy, too_many_jobs
from .unit_queue import UnitQueue

log = structlog.get_logger()


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
        self.demand = demand
        self.accepting = True  # until `stop_accepting`: shutdown has begun
        self.space = SpaceWaits(
            config.space_retry,
            config.space_retry_max,
            lambda job_id: self.tell(sm.SpaceCheck(job_id)),
            lambda job_id: self.book.publish_state(self.book[job_id]),
        )
        self.book = JobBook(config, progress, events, self.space, lambda: self.queue.positions())
        self.queue = UnitQueue(config, progress, self.book, self.space)
        self.faults = Faults.from_env()  # crash tests only; inert when unset
        self.reports = job_tasks.Reports(progress, config.devices())
        self.workers = {supervisor.worker_id: supervisor for supervisor in slots(self)}

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
        await job_files.sweep_job_dirs(self.config, self.progress, {r.job_id for r in unfinished})
        for row in unfinished:
            run = self.book.resume(row)
            self.queue.admit(run)
            if not run.planned:
                await self._start_planning(run)
            elif row.state == JobState.ASSEMBLING:
                self._start_assembly(run)
            else:
                await job_files.remove_unrecorded_parts(self.config, self.progress, run.job_id)
                await self._assemble_if_complete(run)  # died between last part and assembly
            log.info("job.resumed", job_id=row.job_id, state=row.state)

    async def teardown(self) -> None:
        self.space.cancel_all()
        for run in self.book.runs():  # its assembly stops now; the job resumes at restart
            run.answer_kills(Stopping(f"{self.name} stopped"))
        await self.book.stop_tasks()
        await self.reports.stop()

    async def handle(self, message: Any) -> None:
        match message:
            case sm.SubmitJob(job, reply):
                await self._submit(job, reply)
            case sm.PlanFinished():
                await self._plan_finished(message)
            case sm.WorkerUp():
                pass
            case sm.WorkerDown(worker_id, reason, lost, blameless):
                await self._worker_down(worker_id, reason, lost, blameless)
            case sm.WorkersCannotStart(worker_id, reason):
                await self._workers_cannot_start(worker_id, reason)
            case sm.Progress(worker_id, batch):
                self._progress(worker_id, batch)
            case sm.PartVerified(worker_id, ack):
                await self._part_verified(worker_id, ack)
            case sm.PartRefused(worker_id, ack, problem):
                await self._part_refused(worker_id, ack, problem)
            case sm.UnitFinished(worker_id, done):
                await self._unit_finished(worker_id, done.job_id, done.unit_id)
            case sm.ErrorReported(worker_id, error):
                await self._unit_failed(worker_id, error)
            case sm.OutputsPublished() | sm.AssemblyStopped() | sm.AssemblyFinished():
                await self._assembly_ended(message)
            case sm.OutOfSpace():
                await self._assembly_ended(message)
            case sm.SpaceCheck(job_id):
                await self._space_check(job_id)
            case sm.KillJob(job_id, reply):
                await self._kill(job_id, reply)
            case sm.StopAccepting():
                self.accepting = False
        if self.accepting:
            await self._dispatch()
            if self.demand is not None:  # a launcher that starts workers on demand
                self.demand.set_waiting(await self.queue.all_waiting())

    # --- jobs ----------------------------------------------------------------------------

    async def _submit(self, job: NewJob, reply: asyncio.Future[Any]) -> None:
        """Create the job and start planning it; one at a time, so of two submits into
        one output directory only the first can pass, and an owner's submits cannot
        race past `max_jobs_per_owner`."""
        if not self.accepting:
            refusal = "virnucd is shutting down; submit again after restart"
            reply.set_exception(SubmitRefused(ErrorCode.STOPPING, refusal))
            return
        limit, unfinished = self.config.max_jobs_per_owner, self.queue.unfinished(job.owner)
        if limit and unfinished >= limit:
            reply.set_exception(too_many_jobs(limit, unfinished))
            return
        if job.output in self.book.busy_outputs():
            reply.set_exception(output_busy(job.output))
            return
        try:
            run = await self.book.create(job)
        except Exception as exc:  # the handler answers it (e.g. a full state disk)
            reply.set_exception(exc)
            return
        self.queue.admit(run)
        reply.set_result(run.row)
        await self._start_planning(run)

    async def _start_planning(self, run: JobRun) -> None:
        """Record the input as it is now, then plan it in the background."""
        await self.book.fingerprint_input(run)
        work = job_tasks.planning(
            self.progress,
            run.row,
            workers=len(self.workers) or 1,
            max_records=self.config.unit_records,
            cancel=run.cancel,
            index_dir=self.config.job_dir(run.job_id),
        )
        run.start_task(work, self.tell, f"plan-{run.job_id}")

    async def _plan_finished(self, plan: sm.PlanFinished) -> None:
        """Close the plan with the planner's totals (the log checks them against the
        units it recorded), or fail the job with the planner's error."""
        run = self.book.get(plan.job_id)
        if run is None:
            return
        run.task = None
        error, code = plan.error, plan.code
        if error is None:
            try:
                await self.book.finish_planning(
                    run, plan.records_total, plan.units_total, plan.gzip_indexes
                )
            except ConflictError as exc:
                error, code = f"invalid input: {exc}", ErrorCode.INVALID_INPUT
        if error is not None:
            await self._finish(run, JobState.FAILED, error, code)

    async def _finish(
        self,
        run: JobRun,
        state: JobState,
        error: str | None = None,
        code: ErrorCode | None = None,
    ) -> None:
        """Enter a terminal state: its units stop everywhere, then the book records it
        and drops the job (see `JobBook.finish`)."""
        for unit_id in list(run.running):
            await self.queue.take_back(self.workers, run, unit_id, cancel=True)
        await self.book.finish(run, state, error, code)
        self.queue.drop(run)

    async def _kill(self, job_id: str, reply: asyncio.Future[Any]) -> None:
        """Kill an unfinished job. One whose assembly runs is answered when the assembly
        ends: it stops at its next step (killed), or it was publishing (done)."""
        run = self.book.get(job_id)
        if run is None:
            row = await self.progress.get_job(job_id)
            exc: Exception = JobNotFound(job_id) if row is None else JobFinished(row.state)
            reply.set_exception(exc)
            return
        run.kills.append(reply)
        if run.assembling():
            run.cancel.set()
            return
        await self._killed(run)

    async def _killed(self, run: JobRun) -> None:
        await self._finish(run, JobState.KILLED, None)
        run.answer_kills({"job_id": run.job_id, "state": JobState.KILLED.value})

    # --- units and workers ------------------------------------------------------------

    async def _dispatch(self) -> None:
        for supervisor in self.workers.values():
            if not supervisor.idle:
                continue
            picked = await self.queue.next_unit(supervisor.models)
            if picked is None:
                return
            await self._assign(supervisor, *picked)

    async def _workers_cannot_start(self, worker_id: str, reason: str) -> None:
        """No worker could run for the jobs that wait for one: fail each of them that
        nothing computes, with the reason (Slurm's), instead of waiting for good."""
        for run in self.queue.runnable():
            if not run.running and await self.queue.waiting(run):
                await self._finish(run, JobState.FAILED, f"no worker could start: {reason}")

    async def _assign(self, supervisor: WorkerSupervisor, run: JobRun, unit: UnitRow) -> None:
        try:
            if not await self.queue.may_start(run, unit):
                return
        except InputChanged as exc:
            await self._finish(run, JobState.FAILED, str(exc), ErrorCode.INVALID_INPUT)
            return
        if run.row.state == JobState.QUEUED:
            await self.book.set_state(run, JobState.RUNNING)
        await self.queue.hand_out(supervisor, run, unit)

    def _progress(self, worker_id: str, batch: BatchDone) -> None:
        run = self.queue.holding(worker_id, batch.job_id, batch.unit_id)
        if run is None:
            return
        run.batch_done(batch.unit_id, batch.records_done, batch.frames_done)
        if run.progress_event_due():
            self.book.publish_progress(run)

    async def _part_verified(self, worker_id: str, ack: Checkpoint) -> None:
        """Record a verified part; it counts whoever sent it. Its supervisor tells us a
        worker's messages in order and this inbox is first in, first out: a
        `unit_done` is looked at only after the parts sent before it are recorded."""
        try:
            recorded = await self.book.record_part(ack)
        except PartRejected as exc:
            await self._part_refused(worker_id, ack, f"{exc.reason}: {exc}")
            return
        run = self.queue.holding(worker_id, ack.job_id, ack.unit_id)
        if run is None:
            return
        if recorded:
            run.part_recorded(ack.unit_id, ack.record_count, ack.frames)
        self.book.publish_progress(run)

    async def _unit_finished(self, worker_id: str, job_id: str, unit_id: int) -> None:
        run = self.queue.holding(worker_id, job_id, unit_id)
        assignment = await self.queue.take_back(self.workers, run, unit_id) if run else None
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
            await self.book.set_state(run, JobState.ASSEMBLING)
            self._start_assembly(run)

    async def _part_refused(self, worker_id: str, ack: Checkpoint, problem: str) -> None:
        """A part not recorded: its unit goes out again from its resume point."""
        job_id, unit_id = ack.job_id, ack.unit_id
        where = {"job_id": job_id, "unit": unit_id, "first_record": ack.first_record}
        log.warning("part.rejected", worker=worker_id, reason=problem, **where)
        run = self.queue.holding(worker_id, job_id, unit_id)
        if run is None:
            if job_id not in self.book:  # a late part of an ended job: leave no trace
                await asyncio.to_thread(job_files.remove_job_dir, self.config.job_dir(job_id))
            return
        await self.progress.log_event("part.refused", problem, job_id=job_id, worker_id=worker_id)
        await self.queue.take_back(self.workers, run, unit_id, cancel=True)
        await self.progress.set_unit_state(job_id, unit_id, "pending")

    async def _unit_failed(self, worker_id: str, error: WorkerError) -> None:
        run = self.queue.holding(worker_id, error.job_id, error.unit_id)
        if run is None or error.unit_id is None or error.fatal:
            return  # a fatal error ends the process; its death is handled as such
        await self.queue.take_back(self.workers, run, error.unit_id)
        if error.no_space:  # its recorded parts stay; it goes out again once there is room
            run.pending.clear()  # re-read in order, this unit included
            await self.queue.wait_for_state_disk(run)
            await self.progress.set_unit_state(run.job_id, error.unit_id, "pending")
            return
        code = ErrorCode.INVALID_INPUT if error.bad_input else None
        await self._finish(run, JobState.FAILED, f"unit {error.unit_id}: {error.message}", code)

    async def _worker_down(
        self, worker_id: str, reason: str, lost: Assignment | None, blameless: bool = False
    ) -> None:
        """The worker died holding `lost`: resume the unit elsewhere from its last part,
        or fail the job when the unit keeps killing workers. A worker that left on
        purpose (`blameless`: preempted, or idle as the unit reached it) did the unit
        no harm."""
        run = self.book.get(lost.job_id) if lost is not None else None
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
        await self.book.add_restart(run, unrecorded)
        await self.progress.log_event("worker.died", reason, job_id=job_id, worker_id=worker_id)
        if failures >= self.config.max_unit_failures:
            await self._finish(run, JobState.FAILED, kills_its_workers(lost, failures, reason))
            return
        await self.progress.set_unit_state(job_id, unit_id, "pending")

    # --- assembly, and a job that waited for space -------------------------------------

    def _start_assembly(self, run: JobRun) -> None:
        work = job_tasks.assembly(self.progress, run.row, run.cancel, self.faults)
        run.start_task(work, self.tell, f"assemble-{run.job_id}")

    async def _assembly_ended(
        self,
        outcome: sm.OutputsPublished | sm.AssemblyStopped | sm.AssemblyFinished | sm.OutOfSpace,
    ) -> None:
        """The outputs are published: the job is done, a kill that waited is answered
        that it finished, and its report is made after. Otherwise a kill that waited
        ends the job; or it waits for space, or fails, or a part found corrupt is
        forgotten with the rest of its unit, which is computed again."""
        run = self.book.get(outcome.job_id)
        if run is None:
            return
        run.task = None
        if isinstance(outcome, sm.OutputsPublished):
            await self._finish(run, JobState.DONE)
            run.answer_kills(JobFinished(run.row.state))
            self.reports.start(run.row)
        elif run.kills or isinstance(outcome, sm.AssemblyStopped):
            await self._killed(run)
        elif isinstance(outcome, sm.OutOfSpace):
            await self.space.start(outcome.job_id, outcome.path, outcome.needed)
        else:
            await self._assembly_failed(run, outcome)

    async def _assembly_failed(self, run: JobRun, outcome: sm.AssemblyFinished) -> None:
        if outcome.corrupt is not None:
            await self.book.delete_parts(run, *outcome.corrupt)
            await self.book.set_state(run, JobState.RUNNING)
            run.pending.clear()
            return
        await self._finish(run, JobState.FAILED, outcome.error, outcome.code)

    async def _space_check(self, job_id: str) -> None:
        """Go on with a job that waited for space, if there is room now: its assembly
        starts again here, its units are handed out by the dispatch after this message."""
        run = self.book.get(job_id)
        if run is None or not await self.space.check(job_id):
            return
        if run.row.state == JobState.ASSEMBLING:
            self._start_assembly(run)
