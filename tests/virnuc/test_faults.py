"""virnuc/faults.py: which fault points a VIRNUC_FAULT arms, and that a point fires
only once over all processes sharing a marker (tests/e2e/test_crash_safety.py kills
real workers with it)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from virnuc.faults import Faults, FaultSpecError, parse


def test_a_spec_arms_each_point_at_its_visit_first_by_default() -> None:
    assert parse("after_ack@2, mid_unit,") == {"after_ack": 2, "mid_unit": 1}
    assert parse("") == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [("reboot", "unknown point 'reboot'"), ("mid_unit@0", "must be >= 1"), ("mid_unit@x", ">= 1")],
)
def test_a_malformed_spec_is_refused(text: str, problem: str) -> None:
    with pytest.raises(FaultSpecError, match=problem):
        parse(text)


def test_the_armed_visit_flushes_then_kills_once_over_processes_sharing_a_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    happened: list[str] = []
    monkeypatch.setattr("virnuc.faults.os.kill", lambda pid, sig: happened.append(f"kill {sig}"))
    env = {"VIRNUC_FAULT": "after_ack@2", "VIRNUC_FAULT_MARKER": str(tmp_path / "fault")}
    first, restarted = Faults.from_env(env), Faults.from_env(env)
    for faults in (first, restarted):
        faults.before_kill = lambda: happened.append("flush")

    first.hit("mid_unit")  # not armed
    first.hit("after_ack")
    assert happened == []
    first.hit("after_ack")
    assert happened == ["flush", f"kill {signal.SIGKILL}"]
    assert (tmp_path / "fault.after_ack").exists()
    restarted.hit("after_ack")
    restarted.hit("after_ack")  # its own second visit, but the point was claimed
    assert happened == ["flush", f"kill {signal.SIGKILL}"]
