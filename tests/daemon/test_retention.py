"""Finished jobs leave the progress log `retention_days` after they ended, with their
units, parts and events; unfinished jobs stay, and 0 keeps every job."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from virnuc.daemon import retention
from virnuc.daemon.progress.log import NewJob, PartRecord, ProgressLog, UnitPlan
from virnuc.pipeline.spec import ModelSpec

from tests.support.poll import until

SPEC = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300, "demo")
DAY = retention.DAY


@pytest_asyncio.fixture
async def log(tmp_path: Path) -> AsyncIterator[ProgressLog]:
    async with await ProgressLog.open(tmp_path / "state.db") as opened:
        yield opened


async def job_with_a_part(log: ProgressLog, job_id: str, state: str | None) -> None:
    """A planned job of one unit with one recorded part, moved to `state`."""
    await log.create_job(NewJob(job_id, "/in/x.fa", f"/out/{job_id}", SPEC, checkpoint_every=2))
    await log.add_units(job_id, [UnitPlan(0, 0, 0, 2)])
    await log.finish_planning(job_id, 2, 1)
    digest = hashlib.sha256(job_id.encode()).hexdigest()
    await log.record_part(PartRecord(job_id, 0, 0, 2, 12, f"/p/{job_id}", 10, digest, 200))
    if state is not None:
        await log.set_job_state(job_id, "running")
        if state != "running":
            await log.set_job_state(job_id, state)


def rows_of(path: Path, job_id: str) -> dict[str, int]:
    """How many rows each table holds for `job_id`, read straight from the file."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as raw:
        return {
            table: raw.execute(
                f"SELECT COUNT(*) FROM {table} WHERE job_id = ?", (job_id,)
            ).fetchone()[0]
            for table in ("jobs", "units", "parts", "events")
        }


@pytest.mark.asyncio
async def test_jobs_that_ended_longer_ago_than_the_retention_go_with_all_their_rows(
    log: ProgressLog, tmp_path: Path
) -> None:
    for job_id, state in [("done", "done"), ("failed", "failed"), ("killed", "killed")]:
        await job_with_a_part(log, job_id, state)
    await job_with_a_part(log, "running", "running")
    await job_with_a_part(log, "queued", None)

    def days_later(days: float) -> float:
        return time.time() + days * DAY

    assert await retention.drop_old_jobs(log, 30, now=lambda: days_later(29)) == []
    dropped = await retention.drop_old_jobs(log, 30, now=lambda: days_later(31))

    assert sorted(dropped) == ["done", "failed", "killed"]
    database = tmp_path / "state.db"
    for job_id in dropped:
        assert await log.get_job(job_id) is None
        assert rows_of(database, job_id) == {"jobs": 0, "units": 0, "parts": 0, "events": 0}
    for job_id in ("running", "queued"):  # unfinished: never old enough
        assert rows_of(database, job_id)["parts"] == 1
    assert [j.job_id for j in await log.list_jobs()] == ["running", "queued"]


@pytest.mark.asyncio
async def test_retention_0_keeps_every_job_for_ever(log: ProgressLog) -> None:
    await job_with_a_part(log, "done", "done")
    later = time.time() + 10_000 * DAY
    assert await retention.drop_old_jobs(log, 0, now=lambda: later) == []
    assert await log.get_job("done") is not None
    await retention.drop_old_jobs_daily(log, 0)  # returns at once: nothing to do, ever


@pytest.mark.asyncio
async def test_the_daily_task_drops_at_start_and_again_at_each_interval(log: ProgressLog) -> None:
    """A retention of a millisecond: a job that ends after the task started is dropped at
    one of its later rounds, not only at start-up."""
    await job_with_a_part(log, "first", "done")
    task = asyncio.create_task(retention.drop_old_jobs_daily(log, 0.001 / DAY, interval=0.01))
    try:
        await until(lambda: log_misses(log, "first"), "the job done before start to go")
        await job_with_a_part(log, "later", "done")
        await until(lambda: log_misses(log, "later"), "the job done since to go")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def log_misses(log: ProgressLog, job_id: str) -> bool:
    return await log.get_job(job_id) is None
