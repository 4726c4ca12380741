"""A worker's CPU priority: `VIRNUC_WORKER_NICE` below virnucd's, a root daemon's spare at
nice 19 until it is handed its slot (os.setpriority is recorded, never called)."""

from __future__ import annotations

import pytest

from virnuc.worker import priority


@pytest.fixture
def niceness(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The priorities set, in order; the process starts at nice 2."""
    set_to: list[int] = []
    monkeypatch.setattr(priority.os, "getpriority", lambda which, who: 2)
    monkeypatch.setattr(priority.os, "setpriority", lambda which, who, n: set_to.append(n))
    monkeypatch.setattr(priority, "_worker_nice", None)
    monkeypatch.setenv("VIRNUC_WORKER_NICE", "5")
    return set_to


def test_a_worker_runs_its_nice_steps_below_the_daemon(niceness: list[int]) -> None:
    priority.set_worker_priority(standby=False)
    priority.leave_standby()
    assert niceness == [7]


def test_a_root_spare_waits_at_the_lowest_priority_then_returns(
    niceness: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(priority.os, "geteuid", lambda: 0)
    priority.set_worker_priority(standby=True)
    assert niceness == [19]
    priority.leave_standby()
    assert niceness == [19, 7]


def test_a_spare_that_could_not_return_keeps_the_workers_priority(
    niceness: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(priority.os, "geteuid", lambda: 1000)
    priority.set_worker_priority(standby=True)
    priority.leave_standby()
    assert niceness == [7]


def test_the_priority_never_goes_past_19(niceness: list[int], monkeypatch) -> None:
    monkeypatch.setenv("VIRNUC_WORKER_NICE", "40")
    priority.set_worker_priority(standby=False)
    assert niceness == [19]
