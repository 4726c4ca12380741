"""The long steps of a job that run as background tasks of the scheduler: planning
(validate the input, record its units), assembly (verified parts -> outputs) and, once
the job is done, its report.

Planning and assembly return the message that tells the scheduler how they ended
(planning None when cancelled); neither changes the job's state itself
(docs/architecture.md §2). A report never changes it either: it is made after `done`
is recorded, and whatever happens to it the job stays done.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from virnuc.disk_space import is_no_space
from virnuc.faults import Faults
from virnuc.pipeline.output_format import RUN_INFO
from virnuc.pipeline.outputs import OutputExistsError
from virnuc.pipeline.report import REPORT_NAMES
from virnuc.protocol import ErrorCode

from .. import scheduler_messages as sm
from ..progress.log import ConflictError, JobRow, ProgressLog
from .assembler import AssemblyCancelled, PartNeedsRecompute, assemble
from .caller_files import OutputMoved, reopen_output
from .input_check import InputChanged
from .planner import PlanningCancelled, plan_job
from .report_process import write_report
from .result_access import hand_over

log = structlog.get_logger()

#: What the report step writes beside the outputs, each handed to the job's owner.
MADE_AFTER_DONE = (RUN_INFO, *REPORT_NAMES)


async def planning(
    progress: ProgressLog,
    row: JobRow,
    *,
    workers: int,
    max_records: int,
    cancel: threading.Event,
    index_dir: Path | None = None,
) -> sm.PlanFinished | None:
    try:
        totals = await plan_job(
            progress,
            row,
            workers=workers,
            max_records=max_records,
            cancel=cancel,
            index_dir=index_dir,
        )
    except PlanningCancelled:
        return None
    except InputChanged as exc:
        return sm.PlanFinished(row.job_id, str(exc), ErrorCode.INVALID_INPUT)
    except (ValueError, OSError, ConflictError) as exc:
        return sm.PlanFinished(row.job_id, f"invalid input: {exc}", ErrorCode.INVALID_INPUT)
    except Exception as exc:  # a bug must fail the job, not leave it queued forever
        log.exception("planning.crashed", job_id=row.job_id)
        error = f"internal error while planning ({type(exc).__name__}: {exc})"
        return sm.PlanFinished(row.job_id, error)
    return sm.PlanFinished(
        row.job_id,
        None,
        records_total=totals.records,
        units_total=totals.units,
        gzip_indexes=tuple(totals.gzip_indexes),
    )


async def assembly(
    progress: ProgressLog, row: JobRow, cancel: threading.Event, faults: Faults
) -> sm.OutputsPublished | sm.AssemblyStopped | sm.AssemblyFinished | sm.OutOfSpace:
    try:
        await assemble(progress, row, cancel, faults)
    except AssemblyCancelled:
        return sm.AssemblyStopped(row.job_id)
    except PartNeedsRecompute as exc:
        log.warning("assembly.part_rejected", job_id=row.job_id, reason=str(exc))
        return sm.AssemblyFinished(row.job_id, None, (exc.unit_id, exc.first_record))
    except InputChanged as exc:
        return sm.AssemblyFinished(row.job_id, str(exc), code=ErrorCode.INVALID_INPUT)
    except OutputMoved as exc:
        log.error("assembly.failed", job_id=row.job_id, error=str(exc))
        return sm.AssemblyFinished(row.job_id, str(exc), code=ErrorCode.CONFLICT)
    except OSError as exc:  # a full disk waits; a file in the output dir that is not ours
        if is_no_space(exc):
            log.warning("assembly.no_space", job_id=row.job_id, error=str(exc))
            return sm.OutOfSpace(row.job_id, Path(row.output), await _parts_bytes(progress, row))
        error = f"writing the outputs to {row.output} failed: {exc}"
        log.error("assembly.failed", job_id=row.job_id, error=error)  # no traceback: expected
        code = ErrorCode.CONFLICT if isinstance(exc, OutputExistsError) else None
        return sm.AssemblyFinished(row.job_id, error, code=code)
    except Exception as exc:  # a bug: the job fails with the reason
        log.exception("assembly.failed", job_id=row.job_id)
        return sm.AssemblyFinished(row.job_id, f"writing the outputs failed: {exc}")
    return sm.OutputsPublished(row.job_id)


class Reports:
    """The reports of done jobs being made, each its own task. The scheduler starts one
    after it recorded `done`; at shutdown the unfinished ones are cancelled (a child
    already drawing may still write its files, each one atomically)."""

    def __init__(self, progress: ProgressLog, devices: list[str] | None = None) -> None:
        self.progress = progress
        # The devices virnucd's workers run on, once each, for run_info.json: a job's
        # units may have run on any of them.
        self.devices = list(dict.fromkeys(devices or []))
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, row: JobRow) -> None:
        task = asyncio.create_task(self._make(row), name=f"report-{row.job_id}")
        self._tasks.add(task)  # held here: the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _make(self, row: JobRow) -> None:
        try:
            await _report(row, self.devices)
        except asyncio.CancelledError:  # shutdown: the job is done without its report
            log.warning("report.interrupted", job_id=row.job_id)
            raise
        except Exception as exc:  # the outputs are complete whatever happens here
            error = f"{type(exc).__name__}: {exc}"
            log.warning("report.failed", job_id=row.job_id, error=error)
            with contextlib.suppress(Exception):  # a full state disk: the log line stays
                await self.progress.log_event("report.failed", error, job_id=row.job_id)


async def _report(row: JobRow, devices: list[str] | None = None) -> None:
    """`run_info.json`, `prediction.png` and `report.html` beside the published outputs,
    made from them; raises why not."""
    await asyncio.to_thread(_write_report, row, run_of(row, devices or []))


def run_of(row: JobRow, devices: list[str]) -> dict[str, Any]:
    """`build_run_info`'s arguments for the job, as JSON for the report child: the
    spec as virnucd resolved it, the submit's inputs, output and options."""
    return {
        "spec": row.spec.as_dict(),
        "inputs": list(row.inputs),
        "output": row.output,
        "devices": devices,
        "options": {
            "model_set": row.model_set,
            "save_embeddings": row.save_embeddings,
            "checkpoint_every": row.checkpoint_every,
            "force": row.force,
        },
        "seconds": time.time() - row.created_at,  # submit to now: just after `done`
    }


def _write_report(row: JobRow, run: dict[str, Any]) -> None:
    """In one thread: open the output directory again (as the outputs were written),
    write through it, close it; a cancelled task never closes it under a write."""
    target = reopen_output(row.output, row.output_identity, row.owner)
    try:
        out = Path(target.path)
        present = [name for name in MADE_AFTER_DONE if (out / name).exists()]
        if present and not row.force:  # never replace a file that may not be ours
            log.warning("report.skipped", job_id=row.job_id, present=present)
            return
        try:
            write_report(out, run_info={}, shown_as=Path(row.output), run=run)
        finally:  # run_info.json is written before the report is drawn, which may fail
            hand_over(target.path, MADE_AFTER_DONE, row.owner)
    except OSError as exc:
        raise target.shown(exc, row.output) from None
    finally:
        target.close()


async def _parts_bytes(progress: ProgressLog, row: JobRow) -> int:
    """What the outputs will take, about: they hold what the parts hold."""
    return sum([part.size async for part in progress.iter_parts(row.job_id)])
