"""Who may talk to a real virnucd: a private state dir and sockets; tcp:// only with CURVE.

These tests run a real virnucd (one worker) and talk to it as outsiders do:
plain pyzmq + msgpack (`RawClient`) with CURVE keys, and the `virnucctl` command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import zmq
from zmq.auth import load_certificate

from virnuc.client.cli import main as virnucctl

from tests.support.harness import Daemon, RawClient, free_port
from tests.support.poll import wait_for

SOCKETS = ("control.sock", "events.sock", "workers.sock")
REFUSED_WAIT = 1.5  # how long an unknown client waits for the answer it must not get


def test_tcp_without_curve_is_refused_before_anything_starts(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    config = write_config(
        tmp_path / "virnucd.toml", control_endpoint=f"tcp://127.0.0.1:{free_port()}"
    )
    result = run_virnucd("--state-dir", str(state_dir), "--config", str(config), "--workers", "1")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CURVE" in result.stderr
    assert "virnucctl keys generate" in result.stderr
    assert "curve = true" in result.stderr
    assert not state_dir.exists()  # refused before the state dir, let alone a worker


def test_state_dir_and_sockets_are_private(tmp_path: Path, demo_cache: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    os.chmod(state_dir, 0o755)  # as a careless admin left it: virnucd fixes it
    database, jobs = state_dir / "virnuc.db", state_dir / "jobs"
    database.touch(mode=0o644)  # an empty file is an empty database to SQLite
    jobs.mkdir(mode=0o755)  # as a virnucd without its own umask left them
    daemon = Daemon(state_dir, demo_cache, "--workers", "1")
    try:
        daemon.start()
        assert mode(state_dir) == 0o700
        for name in SOCKETS:
            path = state_dir / name
            assert stat.S_ISSOCK(path.stat().st_mode), name
            assert mode(path) == 0o600, f"{name} is {oct(mode(path))}"
        for path in (database, state_dir / "virnucd.lock"):
            assert mode(path) == 0o600, f"{path.name} is {oct(mode(path))}"  # umask 077
        assert mode(jobs) == 0o700
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_curve_over_tcp_admits_only_allowed_keys(tmp_path: Path, demo_cache: Path) -> None:
    state_dir = tmp_path / "state"
    control = f"tcp://127.0.0.1:{free_port()}"
    events = f"tcp://127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path / "virnucd.toml", control_endpoint=control, events_endpoint=events, curve=True
    )
    daemon = Daemon(state_dir, demo_cache, "--config", str(config), "--workers", "1")
    server_key, _ = generate_keys(state_dir / "curve", "server")  # the documented defaults
    _, alice = generate_keys(tmp_path / "keys", "alice")
    _, eve = generate_keys(tmp_path / "keys", "eve")
    (state_dir / "curve" / "clients").mkdir()
    shutil.copy(tmp_path / "keys" / "alice.key", state_dir / "curve" / "clients" / "alice.key")
    daemon.client.close()
    daemon.client = curve_client(control, server_key, alice)
    stranger = curve_client(control, server_key, eve)
    subscribers = zmq.Context()
    try:
        # Subscribed before virnucd binds, so its "running" event reaches us (any
        # caller may follow daemon.state; worker events are for admins only).
        alice_sub = subscribe(subscribers, events, curve_options(server_key, alice))
        eve_sub = subscribe(subscribers, events, curve_options(server_key, eve))
        daemon.start()  # answers alice's ping over CURVE
        assert wait_for(lambda: alice_sub.poll(100), 60, "a daemon event over CURVE")
        topic, body = alice_sub.recv_multipart()
        assert topic == b"daemon.state"
        assert msgpack.unpackb(body)["state"] == "running"
        assert eve_sub.poll(0) == 0

        with pytest.raises(TimeoutError):
            stranger.call("ping", timeout=REFUSED_WAIT)
        assert daemon.client.call("ping")["ok"]  # still serving the allowed client

        keys = ["--curve-server-key", str(server_key), "--curve-client-key", str(alice)]
        command = [sys.executable, "-m", "virnuc.client.cli", "--endpoint", control, *keys]
        result = subprocess.run(
            [*command, "workers", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert [w["id"] for w in json.loads(result.stdout)["workers"]] == ["w0"]
        # alice's key is in curve_allow_dir, not curve_admin_dir: no admin, so no shutdown
        assert daemon.client.call("shutdown")["error"]["code"] == "forbidden"
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(60) == 0
    finally:
        subscribers.destroy(linger=0)
        stranger.close()
        daemon.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_config(path: Path, **values: object) -> Path:
    """A TOML file of simple values (str, bool)."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def generate_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """`virnucctl keys generate`, in-process: (NAME.key, NAME.key_secret)."""
    assert virnucctl(["keys", "generate", "--dir", str(directory), "--name", name, "--json"]) == 0
    return directory / f"{name}.key", directory / f"{name}.key_secret"


def curve_options(server_key: Path, client_secret: Path) -> dict[int, bytes]:
    public, secret = load_certificate(client_secret)
    assert secret is not None
    return {
        zmq.CURVE_SERVERKEY: load_certificate(server_key)[0],
        zmq.CURVE_PUBLICKEY: public,
        zmq.CURVE_SECRETKEY: secret,
    }


def curve_client(endpoint: str, server_key: Path, client_secret: Path) -> RawClient:
    """The docs-only client; its context gives every socket these CURVE keys."""
    client = RawClient(endpoint)
    for option, value in curve_options(server_key, client_secret).items():
        client.context.setsockopt(option, value)
    return client


def run_virnucd(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "virnuc.daemon.main", "--log-format", "json", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def subscribe(
    context: zmq.Context[zmq.Socket[bytes]], endpoint: str, options: dict[int, bytes]
) -> zmq.Socket[bytes]:
    """A SUB socket for the daemon's state events, with these (CURVE) options."""
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    for option, value in options.items():
        sock.setsockopt(option, value)
    sock.setsockopt(zmq.SUBSCRIBE, b"daemon.state")
    sock.connect(endpoint)
    return sock
