"""Which unit an idle worker computes next, handing it out, and taking it back.

Owners are served fairly (daemon/jobs/owner_lines.py): the next idle worker goes to
the owner with the fewest units running, then to the one served least recently. Of
that owner's jobs, the oldest with a pending unit gets it, preferring a job whose
models that worker has loaded already. Pending
units are read from SQLite a page at a time. A unit always starts at its *resume
point*, the end of its last part recorded in SQLite, so a dead worker's unit
continues where its last durable checkpoint ended.

The scheduler owns the one `UnitQueue` and calls it from its own task only; it
writes units' state, never a job's row, and talks to a worker's supervisor only to
assign or release a unit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

import structlog

from virnuc.disk_space import free_bytes
from virnuc.pipeline.spec import ModelSpec
from virnuc.protocol import Assign

from ..config import DaemonConfig
from ..progress.log import ProgressLog, UnitRow
from ..scheduler_messages import Assignment
from . import files as job_files
from .book import JobBook
from .input_check import check_unchanged
from .owner_lines import OwnerLine, OwnerLines
from .run import JobRun, assign_message
from .space_wait import SpaceWaits

log = structlog.get_logger()

PAGE = 64  # pending units fetched from SQLite at a time


class Slot(Protocol):
    """What the queue asks of a worker's supervisor."""

    worker_id: str

    async def assign(self, assignment: Assignment, message: Assign) -> bool: ...

    async def release(self, assignment: Assignment, *, cancel: bool = False) -> None: ...


class UnitQueue:
    def __init__(
        self,
        config: DaemonConfig,
        progress: ProgressLog,
        book: JobBook,
        space: SpaceWaits,
    ) -> None:
        self.config = config
        self.progress = progress
        self.book = book  # the scheduler's unfinished jobs, read here, written there
        self.space = space
        self.lines = OwnerLines()  # the same jobs by owner, for the fair order

    def admit(self, run: JobRun) -> None:
        """Queue a job the book took up (created, or resumed after a restart)."""
        self.lines.admit(run)

    def drop(self, run: JobRun) -> None:
        """Forget a job the book finished (its units were taken back first)."""
        self.lines.drop(run)

    def unfinished(self, owner: str | None) -> int:
        """How many unfinished jobs `owner` has (None: the jobs with no owner)."""
        return self.lines.unfinished(owner)

    def positions(self) -> dict[str, int]:
        """Each queued job's estimated place in the queue (see `OwnerLines.positions`)."""
        return self.lines.positions()

    def servable(self, run: JobRun) -> bool:
        """Whether the job's units may be handed out now (planned, not assembling, not
        waiting for disk space)."""
        return run.planned and run.task is None and run.job_id not in self.space

    def runnable(self) -> list[JobRun]:
        """Every job whose units may be handed out now."""
        return [run for run in self.book.runs() if self.servable(run)]

    async def next_unit(self, models: ModelSpec | None) -> tuple[JobRun, UnitRow] | None:
        """The next unit by the fair order between owners: of the first owner in turn
        that has one, its oldest job's, preferring jobs whose models are `models`."""
        for line in self.lines.in_turn():
            if (picked := await self._next_of(line, models)) is not None:
                return picked
        return None

    async def _next_of(
        self, line: OwnerLine, models: ModelSpec | None
    ) -> tuple[JobRun, UnitRow] | None:
        candidates = [run for run in line.jobs.values() if self.servable(run)]
        warm = [run for run in candidates if models == run.row.spec]
        for run in warm + [run for run in candidates if run not in warm]:
            await self._fetch_pending(run)
            while run.pending:
                unit = run.pending.popleft()
                if unit.unit_id not in run.running:
                    return run, unit
        return None

    async def waiting(self, run: JobRun) -> int:
        """The job's units that wait for a worker (at most a page: enough to size a
        wave of pilots)."""
        await self._fetch_pending(run)
        return sum(1 for unit in run.pending if unit.unit_id not in run.running)

    async def all_waiting(self) -> int:
        """The units of every runnable job that wait for a worker (see `waiting`)."""
        return sum([await self.waiting(run) for run in self.runnable()])

    async def _fetch_pending(self, run: JobRun) -> None:
        if not run.pending:
            run.pending.extend(await self.progress.pending_units(run.job_id, PAGE))

    async def may_start(self, run: JobRun, unit: UnitRow) -> bool:
        """False when the state disk is nearly full: the unit goes back to the front of
        the queue and the job waits for room. Raises InputChanged if an input changed."""
        free = await asyncio.to_thread(free_bytes, self.config.jobs_dir)
        if free is not None and free < self.config.state_min_free:  # before a write fails
            run.pending.appendleft(unit)
            await self.wait_for_state_disk(run)
            return False
        await asyncio.to_thread(check_unchanged, run.row.inputs, run.row.input_fingerprint)
        return True

    async def wait_for_state_disk(self, run: JobRun) -> None:
        """Hand out none of the job's units until the state disk has room again."""
        await self.space.start(run.job_id, self.config.jobs_dir, self.config.state_min_free)

    async def hand_out(self, slot: Slot, run: JobRun, unit: UnitRow) -> None:
        """Send `slot`'s worker the unit, from its resume point (its unrecorded part
        files removed first); a worker gone meanwhile leaves it pending."""
        resume = await self.progress.resume_point(run.job_id, unit.unit_id)
        parts_dir = self.config.job_dir(run.job_id) / "parts"
        await asyncio.to_thread(parts_dir.mkdir, parents=True, exist_ok=True)
        await job_files.remove_unrecorded_parts(
            self.config, self.progress, run.job_id, unit.unit_id
        )
        await self.progress.set_unit_state(run.job_id, unit.unit_id, "running")
        assign = assign_message(run.row, unit, resume, parts_dir)
        assignment = Assignment(
            slot.worker_id,
            run.job_id,
            unit.unit_id,
            unit.first_record,
            assign.start_record,
            unit.end_record,
        )
        run.hand_out(assignment)
        self.lines.served(run)
        log.info(
            "unit.assigned",
            job_id=run.job_id,
            unit=unit.unit_id,
            worker=slot.worker_id,
            start_record=assign.start_record,
            records=assign.record_count,
        )
        if not await slot.assign(assignment, assign):  # it died; WorkerDown follows
            run.take_back(unit.unit_id)
            await self.progress.set_unit_state(run.job_id, unit.unit_id, "pending")

    @staticmethod
    async def take_back(
        slots: Mapping[str, Slot], run: JobRun, unit_id: int, *, cancel: bool = False
    ) -> Assignment | None:
        """Take a unit back from its worker (asking it to drop the unit if `cancel`)."""
        assignment = run.take_back(unit_id)
        if assignment is not None:
            await slots[assignment.worker_id].release(assignment, cancel=cancel)
        return assignment

    def holding(self, worker_id: str, job_id: str | None, unit_id: int | None) -> JobRun | None:
        """The job of a worker's message, if it is about a unit this worker holds."""
        run = self.book.get(job_id)
        held = run.running.get(unit_id) if run is not None and unit_id is not None else None
        if held is None or held.worker_id != worker_id:
            return None  # late news about a unit the worker no longer holds
        return run
