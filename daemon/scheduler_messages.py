"""The messages the scheduler's inbox accepts, from supervisors, handlers and tasks,
and the `Assignment` of a unit to a worker that the scheduler and a supervisor share."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virnuc.pipeline.gzip_index import GzipIndex
from virnuc.protocol import BatchDone, Checkpoint, ErrorCode, UnitDone, WorkerError

from .progress.log import NewJob


@dataclass(frozen=True, slots=True)
class Assignment:
    """The unit a worker computes: records [first_record, end_record), resumed at start."""

    worker_id: str
    job_id: str
    unit_id: int
    first_record: int
    start_record: int
    end_record: int


@dataclass(frozen=True, slots=True)
class WorkerUp:
    worker_id: str


@dataclass(frozen=True, slots=True)
class WorkerDown:
    worker_id: str
    reason: str
    lost: Assignment | None  # the unit it held; it travels here so a respawn cannot erase it
    # It said `leaving` first (idle, or stopped by a signal after its emergency part):
    # its unit resumes elsewhere without counting as a death on that unit.
    blameless: bool = False


@dataclass(frozen=True, slots=True)
class WorkersCannotStart:
    """A worker never ran (a Slurm pilot left pending past slurm_start_timeout, or
    sbatch refused it): the jobs that wait for a worker fail with `reason`."""

    worker_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Progress:
    worker_id: str
    batch: BatchDone


@dataclass(frozen=True, slots=True)
class PartVerified:
    """The part on disk matches its ack (path, size, SHA-256): the scheduler records it."""

    worker_id: str
    ack: Checkpoint


@dataclass(frozen=True, slots=True)
class PartRefused:
    """The part on disk does not match its ack: nothing of it is recorded."""

    worker_id: str
    ack: Checkpoint
    problem: str


@dataclass(frozen=True, slots=True)
class UnitFinished:
    worker_id: str
    done: UnitDone


@dataclass(frozen=True, slots=True)
class ErrorReported:
    worker_id: str
    error: WorkerError


@dataclass(frozen=True, slots=True)
class SubmitJob:
    """Create the job (the handler checked the request); the reply is its row."""

    job: NewJob
    reply: asyncio.Future[Any] = field(compare=False)


@dataclass(frozen=True, slots=True)
class PlanFinished:
    """Planning ended: with `error`, or with the totals the scheduler closes the plan with."""

    job_id: str
    error: str | None
    code: ErrorCode | None = None  # set when the failure is the user's to fix
    records_total: int = 0
    units_total: int = 0
    gzip_indexes: tuple[GzipIndex | None, ...] = ()  # one per input; None for a plain one


@dataclass(frozen=True, slots=True)
class OutputsPublished:
    """The job's outputs are renamed into place: it is done (its report comes after)."""

    job_id: str


@dataclass(frozen=True, slots=True)
class AssemblyStopped:
    """The assembly saw the job's cancel (a kill) and stopped, publishing nothing."""

    job_id: str


@dataclass(frozen=True, slots=True)
class AssemblyFinished:
    """The assembly ended without publishing: the job failed (`error`), or a part was
    found corrupt and its records are computed again."""

    job_id: str
    error: str | None = None
    corrupt: tuple[int, int] | None = None  # (unit, first record) to recompute from
    code: ErrorCode | None = None  # set when the failure is the user's to fix


@dataclass(frozen=True, slots=True)
class OutOfSpace:
    """A job's planning or assembly stopped on a full disk: `path` lies on it, and
    `needed` bytes must be free before it is tried again."""

    job_id: str
    path: Path
    needed: int


@dataclass(frozen=True, slots=True)
class SpaceCheck:
    """Time to look whether a job waiting for space can go on."""

    job_id: str


@dataclass(frozen=True, slots=True)
class KillJob:
    job_id: str
    reply: asyncio.Future[Any] = field(compare=False)


@dataclass(frozen=True, slots=True)
class StopAccepting:
    """virnucd is shutting down: refuse new jobs, and blame no unit for the workers
    that stop with it."""
