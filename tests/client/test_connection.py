"""Finding virnucd and talking to it: the address's resolution order, and an unreachable,
silent or garbled daemon told apart from an answer, without a traceback.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from virnuc.client import cli
from virnuc.client.connection import DaemonAddress

from tests.support.fake_daemon import FakeDaemon, run

pytestmark = pytest.mark.timeout(30)


def test_no_socket_file_is_unreachable_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "nothing-here"
    assert cli.main(["--state-dir", str(state), "list"]) == 3
    err = capsys.readouterr().err
    assert f"ipc://{state}/control.sock" in err
    assert f"Start it with: virnucd --state-dir {state}" in err


def test_stale_socket_file_is_unreachable_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A virnucd that was killed leaves its socket file; nothing listens on it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(tmp_path / "control.sock"))
    assert cli.main(["--state-dir", str(tmp_path), "list"]) == 3
    assert "stale socket file" in capsys.readouterr().err


def test_silent_daemon_is_unreachable_after_the_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeDaemon(tmp_path / "state", silent=True)
    fake.start()
    try:
        assert run(fake, "--timeout", "0.2", "workers") == 3
    finally:
        fake.stop()
    state = fake.state_dir
    assert capsys.readouterr().err == (
        f"virnucctl: error: no answer from virnucd at ipc://{state}/control.sock within 0.2 s"
        f" — is virnucd running? Start it with: virnucd --state-dir {state}"
        f" (state dir: {state}, from --state-dir)\n"
    )


def test_explicit_endpoint_gets_its_own_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"ipc://{tmp_path}/elsewhere.sock"
    assert cli.main(["--endpoint", endpoint, "list"]) == 3
    err = capsys.readouterr().err
    assert endpoint in err
    assert "listening there" in err


def test_malformed_reply_is_an_error_not_a_traceback(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.handlers["status"] = lambda r: {"job_id": "j1", "state": "exploded"}
    assert run(daemon, "status", "j1") == 1
    assert "malformed reply" in capsys.readouterr().err


def test_address_resolution_order(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    xdg = DaemonAddress.resolve(None, None, None, env)
    assert xdg.control == f"ipc://{tmp_path}/xdg/virnuc/control.sock"
    assert xdg.events == f"ipc://{tmp_path}/xdg/virnuc/events.sock"
    env["VIRNUC_STATE_DIR"] = str(tmp_path / "env")
    assert DaemonAddress.resolve(None, None, None, env).state_dir == tmp_path / "env"
    flag = DaemonAddress.resolve(str(tmp_path / "flag"), None, None, env)
    assert flag.source == "--state-dir"
    tcp = DaemonAddress.resolve(str(tmp_path), "tcp://h:5555", None, env)
    assert (tcp.control, tcp.events, tcp.state_dir) == ("tcp://h:5555", None, None)
    ipc = DaemonAddress.resolve(None, "ipc:///s/control.sock", None, env)
    assert ipc.events == "ipc:///s/events.sock"
    home = DaemonAddress.resolve(None, None, None, {})
    assert home.state_dir == Path.home() / ".local/state/virnuc"
