"""`virnucctl predict`'s private virnucd: started, used, shut down and cleaned up,
whatever happens to the job, the daemon or the user's patience.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import virnuc.protocol as p
from virnuc.client import cli, commands, private_daemon

from tests.support.fake_daemon import FakeDaemon, event, job

pytestmark = pytest.mark.timeout(30)


def test_daemon_command() -> None:
    assert private_daemon.daemon_command(Path("/s"), "cuda:0", 2, 50) == [
        sys.executable,
        "-m",
        "virnuc.daemon.main",
        "--state-dir",
        "/s",
        "--device",
        "cuda:0",
        "--workers",
        "2",
        "--checkpoint-every",
        "50",
    ]


def test_predict_shows_the_log_and_cleans_up_when_the_daemon_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "private"
    state.mkdir()
    monkeypatch.setattr(private_daemon, "make_state_dir", lambda: state)
    dying = [sys.executable, "-c", "import sys; print('cannot open /dev/nvidia0'); sys.exit(7)"]
    monkeypatch.setattr(private_daemon, "daemon_command", lambda *a: dying)
    assert cli.main(["predict", "/in.fa", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "virnucd exited with status 7 before answering" in err
    assert "cannot open /dev/nvidia0" in err
    assert not state.exists()


def test_predict_runs_a_job_shuts_the_daemon_down_and_cleans_up(
    daemon: FakeDaemon,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """The fake answers for the daemon; the process predict starts only waits to be
    killed, so the grace period runs out and the SIGKILL path is taken too."""
    monkeypatch.setattr(private_daemon, "make_state_dir", lambda: daemon.state_dir)
    monkeypatch.setattr(private_daemon, "SHUTDOWN_GRACE", 0.1)
    pids: list[int] = []
    real_popen = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        child = real_popen(*args, **kwargs)
        pids.append(child.pid)
        return child

    monkeypatch.setattr(private_daemon.subprocess, "Popen", popen)
    idle = [sys.executable, "-c", "import signal; signal.pause()"]
    monkeypatch.setattr(private_daemon, "daemon_command", lambda *a: idle)
    daemon.handlers["submit"] = lambda r: {"job_id": "j1"}
    daemon.handlers["status"] = lambda r: job(done=2)
    daemon.events.append(event("state", job(state="done", done=10, output="/o")))
    out = tmp_path / "out"
    argv = ["predict", "in.fa", "--out", str(out), "--profile", "demo", "--workers", "2"]
    assert cli.main(argv) == 0
    stdout, stderr = capsys.readouterr()
    assert stdout == f"done: 10 records, 70 frames -> {out}\n"
    assert commands.DEMO_NOTICE in stderr
    assert daemon.ops() == ["ping", "submit", "status", "shutdown"]
    assert daemon.requests[1].args == p.SubmitArgs(
        input=os.path.abspath("in.fa"), output=str(out), profile="demo"
    )
    assert not daemon.state_dir.exists()
    with pytest.raises(ChildProcessError):  # killed and reaped
        os.waitpid(pids[0], os.WNOHANG)


def test_predict_failed_job_exits_1_and_shows_the_log(
    daemon: FakeDaemon,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(private_daemon, "make_state_dir", lambda: daemon.state_dir)
    monkeypatch.setattr(private_daemon, "SHUTDOWN_GRACE", 0.1)
    idle = [sys.executable, "-c", "import signal; signal.pause()"]
    monkeypatch.setattr(private_daemon, "daemon_command", lambda *a: idle)
    daemon.handlers["submit"] = lambda r: {"job_id": "j1"}
    daemon.handlers["status"] = lambda r: job(state="failed", error="worker gave up")
    assert cli.main(["predict", "/in.fa", "--out", "/o", "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["state"] == "failed"
    assert "virnucctl: error: job j1 failed: worker gave up" in err
    assert "the end of virnucd's log" in err
    assert not daemon.state_dir.exists()


def test_predict_of_an_invalid_input_exits_4(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(private_daemon, "make_state_dir", lambda: daemon.state_dir)
    monkeypatch.setattr(private_daemon, "SHUTDOWN_GRACE", 0.1)
    idle = [sys.executable, "-c", "import signal; signal.pause()"]
    monkeypatch.setattr(private_daemon, "daemon_command", lambda *a: idle)
    daemon.handlers["submit"] = lambda r: {"job_id": "j1"}
    failed = job(state="failed", error="invalid input: line 3: not DNA", error_code="invalid_input")
    daemon.handlers["status"] = lambda r: failed
    assert cli.main(["predict", "/in.fa", "--out", "/o"]) == 4


def test_private_daemon_is_cleaned_up_after_ctrl_c(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(private_daemon, "make_state_dir", lambda: daemon.state_dir)
    monkeypatch.setattr(private_daemon, "SHUTDOWN_GRACE", 0.1)
    idle = [sys.executable, "-c", "import signal; signal.pause()"]
    monkeypatch.setattr(private_daemon, "daemon_command", lambda *a: idle)
    private = private_daemon.PrivateDaemon("cpu", 1, None, timeout=5)
    with pytest.raises(KeyboardInterrupt), private:
        raise KeyboardInterrupt
    assert private.process is not None
    assert private.process.returncode == -9  # ignored the shutdown op: killed after the grace
    assert daemon.ops() == ["ping", "shutdown"]
    assert not daemon.state_dir.exists()
    assert "interrupt again to kill it" in capsys.readouterr().err


def test_the_private_virnucd_reads_the_config_it_is_given() -> None:
    command = private_daemon.daemon_command(Path("/s"), "cpu", 1, None, Path("/s/virnucd.toml"))
    assert command[-2:] == ["--config", "/s/virnucd.toml"]


def test_predict_config_gives_the_private_virnucd_only_its_model_sets(tmp_path: Path) -> None:
    config = tmp_path / "virnucd.toml"
    config.write_text(
        'state_dir = "/var/lib/virnuc"\ncontrol_endpoint = "tcp://0.0.0.0:5555"\n'
        '[models.default]\nclassifier = "/m/300_model.pth"\n[models.demo]\nprofile = "demo"\n'
    )
    assert private_daemon.read_model_sets(str(config)) == (
        '[models."default"]\nclassifier = "/m/300_model.pth"\n\n[models."demo"]\nprofile = "demo"\n'
    )


def test_predict_config_with_a_bad_model_set_is_a_usage_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "virnucd.toml"
    config.write_text('[models.default]\nclassifier = "300_model.pth"\n')
    argv = ["predict", "in.fa", "--out", str(tmp_path / "o"), "--config", str(config)]
    assert cli.main(argv) == 2
    assert "[models.default]: classifier must be an absolute path" in capsys.readouterr().err
    assert cli.main([*argv[:-1], str(tmp_path / "missing.toml")]) == 2


def test_predict_models_without_config_is_a_usage_error_saying_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as usage:
        cli.main(["predict", "in.fa", "--out", "o", "--models", "big"])
    assert usage.value.code == 2
    assert "predict --models NAME needs --config FILE" in capsys.readouterr().err
