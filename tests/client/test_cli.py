"""virnucctl's command line itself: where it finds virnucd, how options may be placed,
its help, and a closed stdout.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from virnuc.client import cli

from tests.support.fake_daemon import FakeDaemon, job, paged_list

pytestmark = pytest.mark.timeout(30)


def test_state_dir_from_the_environment(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VIRNUC_STATE_DIR", str(daemon.state_dir))
    daemon.handlers["workers"] = lambda r: {"workers": []}
    assert cli.main(["workers"]) == 0
    assert capsys.readouterr().out == "no workers\n"


def test_options_may_follow_the_command(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.handlers["kill"] = lambda r: {"job_id": "j1", "state": "killed"}
    assert cli.main(["kill", "j1", "--state-dir", str(daemon.state_dir), "--timeout", "5"]) == 0


@pytest.mark.parametrize("argv", [["status"], ["list", "--json"]])
def test_output_into_a_closed_pipe_ends_quietly_with_141(
    argv: list[str], daemon: FakeDaemon
) -> None:
    """``virnucctl status | head -3``: head has gone when virnucctl writes. The pipe's
    read end is closed before virnucctl starts, so every write to stdout fails."""
    daemon.handlers["list"] = paged_list([job(f"j{i}") for i in range(3)])
    env = {**os.environ, "VIRNUC_STATE_DIR": str(daemon.state_dir)}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "virnuc.client.cli", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            timeout=20,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")  # 128 + SIGPIPE, as a shell says of `cat`
    assert cli.EXIT_BROKEN_PIPE == 141


def test_help_lists_the_exit_codes() -> None:
    text = cli.build_parser().format_help()
    assert "Exit codes" in text
    assert "3    virnucd did not answer" in text
