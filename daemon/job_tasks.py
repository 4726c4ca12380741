"""The two long steps of a job that run as background tasks of the scheduler: planning
(validate the input, record its units) and assembly (verified parts -> outputs).

Each returns the message that tells the scheduler how it ended, or None when it was
cancelled; it never changes the job's state itself (docs/architecture.md §2).
"""

from __future__ import annotations

import threading

import structlog

from virnuc.faults import Faults

from . import scheduler_messages as sm
from .assembler import AssemblyCancelled, PartNeedsRecompute, assemble
from .input_check import InputChanged
from .planner import PlanningCancelled, plan_job
from .progress_log import ConflictError, JobRow, ProgressLog

log = structlog.get_logger()


async def planning(
    progress: ProgressLog, row: JobRow, *, workers: int, max_records: int, cancel: threading.Event
) -> sm.PlanFinished | None:
    error = None
    try:
        await plan_job(progress, row, workers=workers, max_records=max_records, cancel=cancel)
    except PlanningCancelled:
        return None
    except InputChanged as exc:
        error = str(exc)
    except (ValueError, OSError, ConflictError) as exc:
        error = f"invalid input: {exc}"
    except Exception as exc:  # a bug must fail the job, not leave it queued forever
        log.exception("planning.crashed", job_id=row.job_id)
        error = f"internal error while planning ({type(exc).__name__}: {exc})"
    return sm.PlanFinished(row.job_id, error)


async def assembly(
    progress: ProgressLog, row: JobRow, cancel: threading.Event, faults: Faults
) -> sm.AssemblyFinished | None:
    try:
        await assemble(progress, row, cancel, faults)
    except AssemblyCancelled:
        return None
    except PartNeedsRecompute as exc:
        log.warning("assembly.part_rejected", job_id=row.job_id, reason=str(exc))
        return sm.AssemblyFinished(row.job_id, None, (exc.unit_id, exc.first_record))
    except InputChanged as exc:
        return sm.AssemblyFinished(row.job_id, str(exc))
    except OSError as exc:  # disk full, a file in the output dir that is not ours
        error = f"writing the outputs to {row.output} failed: {exc}"
        log.error("assembly.failed", job_id=row.job_id, error=error)  # no traceback: expected
        return sm.AssemblyFinished(row.job_id, error)
    except Exception as exc:  # a bug: the job fails with the reason
        log.exception("assembly.failed", job_id=row.job_id)
        return sm.AssemblyFinished(row.job_id, f"writing the outputs failed: {exc}")
    return sm.AssemblyFinished(row.job_id)
