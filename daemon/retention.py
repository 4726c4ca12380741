"""Finished jobs leave the progress log `retention_days` after they ended.

A shared virnucd runs thousands of jobs a year; every one stays in `list` and in
SQLite until dropped. At start-up and then once a day, the done, failed and killed
jobs that ended more than `retention_days` ago are deleted with their units, parts and
events (their outputs are the user's and stay where they are). `retention_days = 0`
keeps every job. Unfinished jobs are never touched: only a job with an end time can
be old enough.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from .progress.log import ProgressLog, ProgressLogError

log = structlog.get_logger()

DAY = 24 * 60 * 60.0


async def drop_old_jobs(
    progress: ProgressLog, retention_days: float, now: Callable[[], float] = time.time
) -> list[str]:
    """Drop the finished jobs that ended more than `retention_days` before `now()`;
    the ids dropped (none when `retention_days` is 0)."""
    if retention_days <= 0:
        return []
    dropped = await progress.drop_finished_jobs(now() - retention_days * DAY)
    if dropped:
        log.info("retention.dropped_jobs", jobs=len(dropped), retention_days=retention_days)
    return dropped


async def drop_old_jobs_daily(
    progress: ProgressLog, retention_days: float, interval: float = DAY
) -> None:
    """`drop_old_jobs` now, then every `interval` seconds, until cancelled."""
    if retention_days <= 0:
        return
    while True:
        try:
            await drop_old_jobs(progress, retention_days)
        except ProgressLogError as exc:  # a damaged or busy database: try the next day
            log.warning("retention.drop_failed", error=str(exc))
        await asyncio.sleep(interval)
