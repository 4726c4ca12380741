"""virnucd on a state it cannot use: it says what is wrong and exits, never 'ready'
with a dead part (issue 11, item 6)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from harness import Daemon

from virnuc.daemon.progress_log import NewJob, ProgressLog
from virnuc.pipeline.spec import ModelSpec

SPEC = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300)


def unfinished_job(database: Path) -> None:
    async def create() -> None:
        progress = await ProgressLog.open(database)
        await progress.create_job(NewJob("j1", "/in.fa", "/out", SPEC, 2))
        await progress.close()

    asyncio.run(create())


def test_a_scheduler_that_cannot_resume_its_jobs_stops_virnucd_non_zero(
    tmp_path: Path, demo_cache: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    unfinished_job(state / "virnuc.db")
    with sqlite3.connect(state / "virnuc.db") as db:  # a row no version of us wrote
        db.execute("UPDATE jobs SET spec = '{\"esm\": ' WHERE job_id = 'j1'")
    daemon = Daemon(state, demo_cache)
    try:
        code = daemon.spawn().wait(120)
        assert code == 1, daemon.log_tail()  # EXIT_INTERNAL
        events = daemon.log_events()
        died = [e for e in events if e.get("event") == "daemon.actor_died"]
        assert died, daemon.log_tail()
        assert died[0]["actor"] == "scheduler"
        assert "JSONDecodeError" in died[0]["error"]
        assert not [e for e in events if e.get("event") == "daemon.ready"], daemon.log_tail()
    finally:
        daemon.close()
