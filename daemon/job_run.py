"""What the scheduler keeps in memory about one unfinished job, and its status view."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field

from virnuc.protocol import JobState, JobStatus

from .progress_log import JobRow, UnitRow
from .scheduler_messages import Assignment


@dataclass
class JobRun:
    """One unfinished job: its row (kept current by the scheduler's own writes), the
    units it has fetched but not handed out, and who computes what (never all units)."""

    row: JobRow
    planned: bool
    cancel: threading.Event = field(default_factory=threading.Event)
    pending: deque[UnitRow] = field(default_factory=deque)
    running: dict[int, Assignment] = field(default_factory=dict)  # unit -> its worker
    live: dict[int, tuple[int, int]] = field(default_factory=dict)  # unit -> unrecorded work
    task: asyncio.Task[None] | None = None  # planning or assembly
    last_event: float = 0.0

    @property
    def job_id(self) -> str:
        return self.row.job_id


def job_status(row: JobRow, run: JobRun | None) -> JobStatus:
    """What `status` shows: the recorded progress plus, for a running job, the records
    its workers computed since their last recorded part (not durable yet)."""
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
