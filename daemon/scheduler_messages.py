"""The messages the scheduler's inbox accepts, from supervisors, handlers and tasks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from virnuc.protocol import BatchDone, Checkpoint, UnitDone, WorkerError


@dataclass(frozen=True, slots=True)
class WorkerUp:
    worker_id: str


@dataclass(frozen=True, slots=True)
class WorkerDown:
    worker_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Progress:
    worker_id: str
    batch: BatchDone


@dataclass(frozen=True, slots=True)
class PartRecorded:
    worker_id: str
    ack: Checkpoint
    unit_done: bool


@dataclass(frozen=True, slots=True)
class PartRefused:
    worker_id: str
    ack: Checkpoint
    problem: str


@dataclass(frozen=True, slots=True)
class UnitFinished:
    worker_id: str
    done: UnitDone


@dataclass(frozen=True, slots=True)
class UnitFailed:
    worker_id: str
    error: WorkerError


@dataclass(frozen=True, slots=True)
class JobSubmitted:
    job_id: str


@dataclass(frozen=True, slots=True)
class PlanFinished:
    job_id: str
    error: str | None


@dataclass(frozen=True, slots=True)
class AssemblyFinished:
    job_id: str
    error: str | None = None
    corrupt: tuple[int, int] | None = None  # (unit, first record) to recompute from


@dataclass(frozen=True, slots=True)
class KillJob:
    job_id: str
    reply: asyncio.Future[Any] = field(compare=False)
