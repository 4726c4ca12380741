"""virnucd on a state it cannot use: it says what is wrong and exits, never 'ready'
with a dead part (issue 11, item 6)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from virnuc.daemon.progress.log import NewJob, ProgressLog
from virnuc.pipeline.spec import ModelSpec

from tests.support.harness import Daemon

SPEC = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300)


def unfinished_job(database: Path) -> None:
    async def create() -> None:
        progress = await ProgressLog.open(database)
        await progress.create_job(NewJob("j1", "/in.fa", "/out", SPEC, 2))
        for n in range(300):  # several pages of rows
            await progress.log_event("note", f"event {n} " + "x" * 40, job_id="j1")
        await progress.close()

    asyncio.run(create())


def state_with_a_job(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    unfinished_job(state / "virnuc.db")
    assert not (state / "virnuc.db-wal").exists()  # closed cleanly: all in the main file
    return state


def run_to_exit(state: Path, demo_cache: Path, code: int, event: str) -> dict[str, Any]:
    """Start virnucd on `state`; it must exit `code`, never having logged `ready`,
    and having logged `event`, which is returned."""
    daemon = Daemon(state, demo_cache)
    try:
        assert daemon.spawn().wait(120) == code, daemon.log_tail()
        events = daemon.log_events()
        assert not [e for e in events if e.get("event") == "daemon.ready"], daemon.log_tail()
        found = [e for e in events if e.get("event") == event]
        assert found, daemon.log_tail()
        return found[0]
    finally:
        daemon.close()


def test_a_scheduler_that_cannot_resume_its_jobs_stops_virnucd_non_zero(
    tmp_path: Path, demo_cache: Path
) -> None:
    state = state_with_a_job(tmp_path)
    with sqlite3.connect(state / "virnuc.db") as db:  # a row no version of us wrote
        db.execute("UPDATE jobs SET spec = '{\"esm\": ' WHERE job_id = 'j1'")
    db.close()
    died = run_to_exit(state, demo_cache, 1, "daemon.actor_died")  # EXIT_INTERNAL
    assert died["actor"] == "scheduler"
    assert "JSONDecodeError" in died["error"]


def damage_a_page(database: Path) -> None:
    """Overwrite the root page of the events table, as a failing disk or a bad copy
    would: SQLite opens the file, and only reading that table finds the damage."""
    with sqlite3.connect(database) as db:
        page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'events'").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with database.open("r+b") as raw:
        raw.seek((page - 1) * page_size)
        raw.write(b"\xa5" * page_size)


def test_a_damaged_database_stops_virnucd_with_exit_3_naming_the_file(
    tmp_path: Path, demo_cache: Path
) -> None:
    state = state_with_a_job(tmp_path)
    damage_a_page(state / "virnuc.db")
    unusable = run_to_exit(state, demo_cache, 3, "daemon.progress_log_unusable")
    assert f"{state / 'virnuc.db'} is damaged" in unusable["error"]
    assert "move it aside" in unusable["error"]
