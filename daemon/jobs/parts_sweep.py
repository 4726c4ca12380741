"""Part files and job folders on disk against what SQLite records: what the progress
log does not record does not exist (docs/architecture.md §4). Run by the scheduler
at start-up and before each unit is handed out."""

from __future__ import annotations

import asyncio

import structlog

from ..config import DaemonConfig
from ..progress.log import ProgressLog
from . import files as job_files

log = structlog.get_logger()


async def sweep_job_dirs(config: DaemonConfig, progress: ProgressLog, unfinished: set[str]) -> None:
    """Drop the folders a crash left behind for jobs that ended; set aside, loudly,
    those of jobs the database does not know."""
    jobs_dir = config.jobs_dir
    for job_id in await asyncio.to_thread(job_files.job_dirs, jobs_dir) - unfinished:
        job_dir = jobs_dir / job_id
        if await progress.get_job(job_id) is not None:
            await asyncio.to_thread(job_files.remove_job_dir, job_dir)
            continue
        aside = config.state_dir / "orphaned"
        moved = await asyncio.to_thread(job_files.set_aside, job_dir, aside)
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
    sweep = job_files.remove_unrecorded_parts
    if removed := await asyncio.to_thread(sweep, parts_dir, recorded, unit_id):
        log.info("parts.unrecorded_removed", job_id=job_id, count=removed)
