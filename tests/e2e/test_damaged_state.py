"""virnucd on a state it cannot use: it says what is wrong and exits, never 'ready'
with a dead part (issue 11, item 6)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from virnuc.daemon.progress.log import NewJob, ProgressLog
from virnuc.pipeline.spec import ModelSpec

from tests.daemon.progress.test_wal_check import frames, overwrite
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


def test_a_damaged_wal_after_a_sigkill_stops_virnucd_with_exit_3(
    tmp_path: Path, demo_cache: Path
) -> None:
    state = tmp_path / "state"
    daemon = Daemon(state, demo_cache, "--workers", "1")
    try:
        daemon.start()
        daemon.workers_ready(1)
        job = daemon.client.result(
            "submit",
            input=str(Path("examples/example.fasta").resolve()),
            output=str(tmp_path / "out"),
            profile="demo",
        )["job_id"]
        daemon.client.wait_state(job, ("done",))
        daemon.kill9()  # the WAL keeps its frames: nothing checkpointed them
    finally:
        daemon.close()
    wal = state / "virnuc.db-wal"
    assert wal.stat().st_size > 0
    commits = [offset for offset, db_size in frames(wal) if db_size]
    assert len(commits) >= 4, "too few transactions in the WAL to damage one in the middle"
    overwrite(wal, commits[len(commits) // 2] + 24 + 100, b"\xa5" * 64)

    daemon.log_path.unlink()  # the restart's log only: the first run did log "ready"
    restarted = Daemon(state, demo_cache)
    try:
        assert restarted.spawn().wait(120) == 3, restarted.log_tail()  # EXIT_STATE_DIR
        events = restarted.log_events()
        assert not [e for e in events if e.get("event") == "daemon.ready"], restarted.log_tail()
        unusable = [e for e in events if e.get("event") == "daemon.progress_log_unusable"]
        assert unusable, restarted.log_tail()
        assert f"{wal} is damaged" in unusable[0]["error"]
        assert "committed transactions" in unusable[0]["error"]
    finally:
        restarted.close()
