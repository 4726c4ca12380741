"""What the scheduler keeps in memory about one unfinished job, and its status view."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virnuc.model_wire import spec_to_wire
from virnuc.protocol import Assign, JobState, JobStatus

from ..progress.log import JobRow, UnitRow
from ..scheduler_messages import Assignment

PROGRESS_EVENT_INTERVAL = 0.5  # seconds between two `progress` events of a job


@dataclass
class JobRun:
    """One unfinished job: its row (as the `JobBook`'s last write of it returned),
    the units it has fetched but not handed out, and who computes what (never all
    units)."""

    row: JobRow
    planned: bool
    cancel: threading.Event = field(default_factory=threading.Event)
    pending: deque[UnitRow] = field(default_factory=deque)
    running: dict[int, Assignment] = field(default_factory=dict)  # unit -> its worker
    # Per running unit, as (records, frames): computed since its last recorded part
    # (`live`, shown in status, lost if the worker dies), recorded since its assign.
    live: dict[int, tuple[int, int]] = field(default_factory=dict)
    recorded: dict[int, tuple[int, int]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None  # planning or assembly
    # Kills that wait for the assembly to stop (killed) or publish (done): answered then.
    kills: list[asyncio.Future[Any]] = field(default_factory=list)
    last_event: float = 0.0

    @property
    def job_id(self) -> str:
        return self.row.job_id

    def hand_out(self, assignment: Assignment) -> None:
        self.running[assignment.unit_id] = assignment
        self.recorded[assignment.unit_id] = (0, 0)

    def take_back(self, unit_id: int) -> Assignment | None:
        """The unit is computed nowhere any more; returns who computed it."""
        self.live.pop(unit_id, None)
        self.recorded.pop(unit_id, None)
        return self.running.pop(unit_id, None)

    def batch_done(self, unit_id: int, records: int, frames: int) -> None:
        """A worker's counts since its assign (`batch_done`), minus what is recorded."""
        done_records, done_frames = self.recorded.get(unit_id, (0, 0))
        self.live[unit_id] = (max(0, records - done_records), max(0, frames - done_frames))

    def part_recorded(self, unit_id: int, records: int, frames: int) -> None:
        """A part of a running unit was recorded: its rows leave `live`."""
        done_records, done_frames = self.recorded.get(unit_id, (0, 0))
        self.recorded[unit_id] = (done_records + records, done_frames + frames)
        live_records, live_frames = self.live.get(unit_id, (0, 0))
        self.live[unit_id] = (max(0, live_records - records), max(0, live_frames - frames))

    def progress_event_due(self) -> bool:
        """Whether to publish a `progress` event now (at most one per interval)."""
        now = time.monotonic()
        if now - self.last_event < PROGRESS_EVENT_INTERVAL:
            return False
        self.last_event = now
        return True

    def start_task(
        self, work: Coroutine[Any, Any, Any], tell: Callable[[Any], Awaitable[None]], name: str
    ) -> None:
        """Run the job's planning or assembly; its outcome, a message, goes to `tell`."""

        async def report() -> None:
            if (outcome := await work) is not None:
                await tell(outcome)

        self.task = asyncio.create_task(report(), name=name)

    def assembling(self) -> bool:
        """Whether its assembly runs now (not waiting for space)."""
        return self.task is not None and self.row.state == JobState.ASSEMBLING

    def answer_kills(self, answer: dict[str, Any] | Exception) -> None:
        """Answer every kill that waited, with a result or an exception."""
        for reply in self.kills:
            if reply.done():
                continue
            if isinstance(answer, Exception):
                reply.set_exception(answer)
            else:
                reply.set_result(answer)
        self.kills.clear()

    def stop_task(self) -> None:
        """Stop the job's planning or assembly, if it runs: its thread sees `cancel`."""
        self.cancel.set()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


def kills_its_workers(lost: Assignment, failures: int, reason: str) -> str:
    """Why a job fails whose unit killed its worker `failures` times in a row."""
    records = f"records {lost.first_record}..{lost.end_record - 1}"
    return (
        f"unit {lost.unit_id} ({records} of the input) killed its worker "
        f"{failures} times in a row; last: {reason}"
    )


def job_status(
    row: JobRow, run: JobRun | None, waiting: str | None = None, position: int | None = None
) -> JobStatus:
    """What `status` shows: the recorded progress plus, for a running job, the records
    its workers computed since their last recorded part (not durable yet), why it is
    paused on a full disk, if it is, and a queued job's place in the queue."""
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
        inputs=list(row.inputs),
        output=row.output,
    )
    status["records_recomputed"] = row.records_recomputed
    status["frames_reused"] = row.frames_reused
    status["precision"] = row.spec.precision
    if row.model_set is not None:
        status["model_set"] = row.model_set
    status["submitted_at"] = row.created_at
    if row.finished_at is not None:
        status["finished_at"] = row.finished_at
    if row.error:
        status["error"] = row.error
    if row.error_code:
        status["error_code"] = row.error_code
    if waiting is not None:
        status["waiting"] = waiting
    if position is not None:
        status["queue_position"] = position
    return status


def assign_message(row: JobRow, unit: UnitRow, resume: tuple[int, int], parts_dir: Path) -> Assign:
    """The `assign` that computes `unit` of the job from its resume point (the record
    and byte offset its last recorded part ended at), with what the worker needs to
    check the unit's bytes against the plan. The worker reads the unit's own input file:
    a unit never spans two, and its offsets are positions in that file."""
    record, offset = resume
    return Assign(
        job_id=row.job_id,
        unit_id=unit.unit_id,
        input=row.inputs[unit.input_index],
        start_offset=offset,
        start_record=record,
        record_count=unit.end_record - record,
        models=spec_to_wire(row.spec),
        save_embeddings=row.save_embeddings,
        checkpoint_every=row.checkpoint_every,
        parts_dir=str(parts_dir),
        unit_offset=unit.start_offset,
        unit_end_offset=unit.end_offset,
        digest=unit.digest,
        **_gzip_index_fields(row, unit.input_index),
    )


def _gzip_index_fields(row: JobRow, input_index: int) -> dict[str, Any]:
    """The `assign` fields naming the unit's input's seek-point index, if it has one."""
    index = row.gzip_indexes[input_index] if input_index < len(row.gzip_indexes) else None
    if index is None:
        return {}
    return {
        "gzip_index": index.path,
        "gzip_index_size": index.size,
        "gzip_index_sha256": index.sha256,
    }
