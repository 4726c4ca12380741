"""daemon/jobs/space_wait.py: when a job paused on a full disk is worth retrying, and
how its wait is shown and ended (the scheduler drives it: test_scheduler.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from virnuc.daemon.jobs import space_wait
from virnuc.daemon.jobs.space_wait import ROOM, SpaceWait, SpaceWaits


@pytest.mark.parametrize(
    ("free_now", "needed", "free_then", "ready"),
    [
        (None, 10 * ROOM, 0, True),  # cannot be asked: retried
        (ROOM - 1, 1, None, False),  # under ROOM is never worth a retry
        (5 * ROOM, 5 * ROOM, 4 * ROOM, True),  # what was needed is free
        (5 * ROOM, 9 * ROOM, 4 * ROOM, True),  # ROOM was freed since it stopped
        (5 * ROOM, 9 * ROOM, 4 * ROOM + 1, False),  # less than ROOM freed
        (5 * ROOM, 9 * ROOM, None, True),  # free space unknown when it stopped
    ],
)
def test_a_retry_is_worth_making_once_the_space_is_free_or_room_was_freed(
    monkeypatch: pytest.MonkeyPatch,
    free_now: int | None,
    needed: int,
    free_then: int | None,
    ready: bool,
) -> None:
    monkeypatch.setattr(space_wait, "free_bytes", lambda path: free_now)
    assert SpaceWait(Path("/out"), needed, free_then).ready() is ready


def test_a_paused_job_is_shown_waiting_woken_and_let_go_once_there_is_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    free = [0]
    monkeypatch.setattr(space_wait, "free_bytes", lambda path: free[0])
    monkeypatch.setattr(space_wait, "describe", lambda path, needed: "no space on /out")

    async def scenario() -> list[str]:
        woken = asyncio.Event()
        shown: list[str] = []

        async def wake(job_id: str) -> None:
            woken.set()

        waits = SpaceWaits(0.01, 0.01, wake, shown.append)
        await waits.start("j1", Path("/out"), 2 * ROOM)
        await waits.start("j1", Path("/out"), 2 * ROOM)  # one wait per job
        assert "j1" in waits
        assert (waits.reason("j1") or "").startswith("no space on /out; next try at ")
        await asyncio.wait_for(woken.wait(), 5)
        assert not await waits.check("j1")  # still full: looked at again later
        free[0] = 2 * ROOM
        assert await waits.check("j1")
        assert "j1" not in waits
        assert waits.reason("j1") is None
        waits.cancel_all()
        return shown

    assert asyncio.run(scenario()) == ["j1", "j1"]
