"""What a job keeps on disk while it runs: `state_dir/jobs/<job_id>/parts/` (§5 of
docs/architecture.md), kept in line with what SQLite records (§4). SQLite is the
truth: a part file it does not record does not exist, and the directory of a job
that ended is removed. A directory whose job SQLite does not know at all is never
deleted: it is set aside in `state_dir/orphaned/`. The scheduler sweeps at start-up
and before each unit is handed out; the file work runs in a thread."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import structlog

from virnuc.parts import unit_prefix

from ..config import DaemonConfig
from ..progress.log import ProgressLog

log = structlog.get_logger()


async def sweep_job_dirs(config: DaemonConfig, progress: ProgressLog, unfinished: set[str]) -> None:
    """Drop the folders a crash left behind for jobs that ended; set aside, loudly,
    those of jobs the database does not know."""
    jobs_dir = config.jobs_dir
    for job_id in await asyncio.to_thread(job_dirs, jobs_dir) - unfinished:
        job_dir = jobs_dir / job_id
        if await progress.get_job(job_id) is not None:
            await asyncio.to_thread(remove_job_dir, job_dir)
            continue
        aside = config.state_dir / "orphaned"
        moved = await asyncio.to_thread(set_aside, job_dir, aside)
        log.warning(
            "parts.orphaned",
            job_id=job_id,
            moved_to=str(moved),
            reason="the progress log has no such job (restored or replaced database?)",
        )


async def remove_unrecorded_parts(
    config: DaemonConfig, progress: ProgressLog, job_id: str, unit_id: int | None = None
) -> None:
    """Delete the job's part files (or one unit's) that SQLite does not record."""
    parts_dir = config.job_dir(job_id) / "parts"
    if unit_id is None:
        recorded = {row.path async for row in progress.iter_parts(job_id)}
    else:  # at each assignment: only this unit's rows, not the whole job's
        recorded = {row.path for row in await progress.parts_of_unit(job_id, unit_id)}
    if removed := await asyncio.to_thread(_remove_unlisted, parts_dir, recorded, unit_id):
        log.info("parts.unrecorded_removed", job_id=job_id, count=removed)


def _remove_unlisted(parts_dir: Path, recorded: set[str], unit_id: int | None) -> int:
    """Delete the part files (also temporary dot-files) of `unit_id`, or of every unit,
    whose path is not in `recorded`; returns how many."""
    prefix = "" if unit_id is None else unit_prefix(unit_id)
    removed = 0
    for path in parts_dir.glob("*") if parts_dir.is_dir() else []:
        if path.name.lstrip(".").startswith(prefix) and str(path) not in recorded:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def job_dirs(jobs_dir: Path) -> set[str]:
    """The job ids that have a directory under `jobs_dir`."""
    return {path.name for path in jobs_dir.iterdir()} if jobs_dir.is_dir() else set()


def set_aside(job_dir: Path, aside_dir: Path) -> Path:
    """Move the directory of a job the progress log does not know (a restored or
    replaced database) to `aside_dir`, where nothing deletes it; returns where."""
    aside_dir.mkdir(mode=0o700, exist_ok=True)
    target = aside_dir / f"{job_dir.name}-{int(time.time())}"
    job_dir.rename(target)
    return target


def remove_job_dir(job_dir: Path) -> None:
    shutil.rmtree(job_dir, ignore_errors=True)


def unlink_all(paths: Iterable[str]) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)
