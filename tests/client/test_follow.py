"""`virnucctl wait` (and `--wait`): ended by an event or by a poll, its exit status from
the job's end, and its patience with a silent or vanished virnucd.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, cast

import pytest

import virnuc.protocol as p
from virnuc.client import cli, follow
from virnuc.client.connection import DaemonClient
from virnuc.client.errors import DaemonUnreachable

from tests.support.fake_daemon import FakeDaemon, event, job, run, sequence

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("state", "code"), [("done", 0), ("failed", 1), ("killed", 1)])
def test_wait_is_ended_by_an_event(
    state: str,
    code: int,
    daemon: FakeDaemon,
    no_polls: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``status`` says running forever; only the state event can end the wait."""
    daemon.handlers["status"] = lambda r: job(done=0)
    final = job(state=state, done=10, error="worker w0 gave up on unit 3")
    daemon.events.append(event("progress", job(done=6)))
    daemon.events.append(event("state", final))
    daemon.events.append(event("state", job("other", state="done")))
    assert run(daemon, "wait", "j1") == code
    err = capsys.readouterr().err
    if state == "failed":
        assert "virnucctl: error: job j1 failed: worker w0 gave up on unit 3" in err
    assert daemon.ops() == ["status"]


@pytest.mark.parametrize(("state", "code"), [("done", 0), ("failed", 1)])
def test_wait_is_ended_by_polling_when_no_event_comes(
    state: str,
    code: int,
    daemon: FakeDaemon,
    fast_polls: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    daemon.handlers["status"] = sequence(job(done=0), job(done=4), job(state=state, done=10))
    assert run(daemon, "wait", "j1") == code
    assert daemon.ops() == ["status"] * 3
    assert "records 10/10" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error_code", "exit_code"), [("invalid_input", 4), ("conflict", 4), (None, 1)]
)
def test_wait_exits_4_for_a_job_whose_input_is_to_blame_else_1(
    error_code: str | None, exit_code: int, daemon: FakeDaemon, fast_polls: None
) -> None:
    extra = {"error_code": error_code} if error_code else {}
    failed = job(state="failed", done=4, error="planning: record 5: not DNA", **extra)
    daemon.handlers["status"] = sequence(job(done=1), failed)
    assert run(daemon, "wait", "j1") == exit_code


def test_wait_json_prints_the_final_status(
    daemon: FakeDaemon, fast_polls: None, capsys: pytest.CaptureFixture[str]
) -> None:
    final = job(state="done", done=10, output="/out")
    daemon.handlers["status"] = sequence(job(done=1), final)
    assert run(daemon, "wait", "j1", "--json") == 0
    assert json.loads(capsys.readouterr().out) == final


def test_wait_asks_again_when_a_poll_goes_unanswered(
    daemon: FakeDaemon, fast_polls: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A paused or busy virnucd: each unanswered poll times out and is asked again."""
    daemon.handlers["status"] = sequence(job(done=0), None, None, job(state="done", done=10))
    assert run(daemon, "--timeout", "0.2", "wait", "j1") == 0
    assert daemon.ops() == ["status"] * 4
    err = capsys.readouterr().err
    assert err.count("within 0.2 s; asking again for up to 120 s") == 1  # once per silence
    assert "job j1 done: 10 records" in err


def test_wait_gives_up_with_exit_3_once_silent_for_its_deadline(
    daemon: FakeDaemon, fast_polls: None, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.handlers["status"] = sequence(job(done=0), None)  # answers once, then silence
    started = time.monotonic()
    argv = ["--timeout", "0.2", "wait", "j1", "--give-up-after", "0.7"]
    assert run(daemon, *argv) == cli.EXIT_UNREACHABLE
    assert time.monotonic() - started >= 0.7
    assert daemon.ops().count("status") >= 1 + 4  # 0.2 + 0.2 + 0.2 + the last 0.1 s
    err = capsys.readouterr().err
    assert f"no answer from virnucd at {daemon.control} for 0.7 s (" in err
    assert "is virnucd running?" in err


def test_a_poll_is_not_asked_again_when_the_daemon_is_gone(tmp_path: Path) -> None:
    """No socket file (virnucd stopped or was killed): exit 3 at once, no retries."""
    calls = []

    class GoneDaemon:
        timeout, endpoint = 0.2, f"ipc://{tmp_path}/control.sock"

        def call(self, args: p.OpArgs, timeout: float | None = None) -> dict[str, Any]:
            calls.append(args)
            raise DaemonUnreachable(self.endpoint, "no virnucd there")

    client = cast(DaemonClient, GoneDaemon())
    with pytest.raises(DaemonUnreachable):
        follow.poll_status(client, "j1", give_up_after=60)
    assert calls == [p.StatusArgs("j1")]
