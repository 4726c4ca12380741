"""virnucd under systemd (`Type=notify`): what it tells $NOTIFY_SOCKET, and when.

A test plays systemd's part: it binds an AF_UNIX datagram socket and hands its path
to virnucd as NOTIFY_SOCKET, then reads what arrives, with deadlines, never sleeps.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.harness import Daemon
from tests.support.poll import wait_for

UNIT = Path(__file__).parents[2] / "systemd" / "virnucd.service"
WATCHDOG_USEC = 1_000_000


class FakeSystemd:
    """The receiving end of sd_notify: every field that arrives, in order, with its time."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(str(path))
        self.fields: list[tuple[float, str]] = []

    def receive(self, timeout: float) -> bool:
        """Take one datagram (waiting up to `timeout`); False if none came."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return False
        now = time.monotonic()
        self.fields.extend((now, field) for field in data.decode().split("\n") if field)
        return True

    def until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout} s; got {self.names()}")
            self.receive(left)

    def drain(self) -> None:
        while self.receive(0.001):
            pass

    def names(self) -> list[str]:
        return [field for _, field in self.fields]

    def index(self, field: str) -> int:
        return self.names().index(field)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    path = tmp_path / "notify.sock"
    assert len(str(path)) < 100, f"AF_UNIX paths are short; {path} is too long"
    fake = FakeSystemd(path)
    yield fake
    fake.close()


def _daemon(tmp_path: Path, demo_cache: Path, systemd: FakeSystemd, *args: str, **env: str):
    return Daemon(
        tmp_path / "state", demo_cache, *args, env={"NOTIFY_SOCKET": str(systemd.path), **env}
    )


def test_ready_after_hello_then_watchdog_status_and_stopping(
    tmp_path: Path, demo_cache: Path, systemd: FakeSystemd
) -> None:
    daemon = _daemon(
        tmp_path, demo_cache, systemd, "--workers", "1", WATCHDOG_USEC=str(WATCHDOG_USEC)
    )
    try:
        daemon.spawn()
        systemd.until(lambda: "READY=1" in systemd.names(), 60, "READY=1")
        # At the moment READY=1 arrives, the worker has said hello: its hello is in the
        # log already, before the daemon's own "workers ready" line ...
        at_ready = daemon.log_events()
        hello = next((e for e in at_ready if e.get("event") == "worker.hello"), None)
        assert hello is not None, daemon.log_tail()
        assert hello["worker"] == "w0", hello

        # (the line virnucd logs after sending READY=1 comes after the hello, too)
        def events_once_ready() -> list[str | None] | None:
            events = [e.get("event") for e in daemon.log_events()]
            return events if "daemon.workers_ready" in events else None

        events = wait_for(events_once_ready, 10, "the daemon.workers_ready log line")
        assert events.index("worker.hello") < events.index("daemon.workers_ready")
        # ... and `workers` shows it up, with the pid that said hello.
        (worker,) = daemon.client.result("workers")["workers"]
        assert worker["state"] == "idle", worker
        assert worker["pid"] == hello["pid"], (worker, hello)

        ready = systemd.index("READY=1")

        def beats_after_ready() -> list[float]:
            return [t for t, f in systemd.fields[ready:] if f == "WATCHDOG=1"]

        systemd.until(lambda: len(beats_after_ready()) >= 4, 10, "WATCHDOG=1 pings")
        beats = beats_after_ready()
        gaps = [b - a for a, b in itertools.pairwise(beats)]
        # systemd kills a service that misses WatchdogSec; virnucd pings at half of it.
        assert max(gaps) < WATCHDOG_USEC / 1e6, gaps
        statuses = [f for f in systemd.names()[ready:] if f.startswith("STATUS=")]
        assert statuses, systemd.names()
        assert re.fullmatch(r"STATUS=\d+ unfinished job\(s\); workers: 1 idle", statuses[-1])

        assert daemon.client.call("shutdown")["ok"]
        systemd.until(lambda: "STOPPING=1" in systemd.names(), 30, "STOPPING=1")
        assert daemon.process is not None
        assert daemon.process.wait(60) == 0, daemon.log_tail()
        systemd.drain()
        names = systemd.names()
        stopping = systemd.index("STOPPING=1")
        assert names.count("READY=1") == 1
        assert ready < stopping
        assert "WATCHDOG=1" in names[ready:stopping]
        assert "WATCHDOG=1" not in names[stopping:], names[stopping:]
    finally:
        daemon.close()


def _unusable_gpu() -> str:
    """cuda:0 on a machine without CUDA (like CI); past the last GPU on one with GPUs."""
    import torch

    return f"cuda:{torch.cuda.device_count() + 3}" if torch.cuda.is_available() else "cuda:0"


def test_a_device_that_cannot_work_stops_virnucd_and_never_sends_ready(
    tmp_path: Path, demo_cache: Path, systemd: FakeSystemd
) -> None:
    """No silent fall back to CPU: the slot is retried by the restart policy, and
    when no configured worker comes up at start-up virnucd exits non-zero naming the
    worker and the device."""
    # The restart policy is the real one, with a short backoff cap to save time.
    config = tmp_path / "virnucd.toml"
    config.write_text("restart_backoff_max = 0.1\n")
    device = _unusable_gpu()
    daemon = _daemon(tmp_path, demo_cache, systemd, "--device", device, "--config", str(config))
    try:
        process = daemon.spawn()
        code = process.wait(120)
        systemd.drain()
        assert code == 4, daemon.log_tail()  # EXIT_WORKERS in virnuc.daemon.main
        assert "READY=1" not in systemd.names(), systemd.names()
        events = daemon.log_events()
        never = [e for e in events if e.get("event") == "daemon.worker_never_started"]
        assert never, events
        assert "w0" in never[0]["worker"], never
        assert device in never[0]["worker"], never
        gave_up = [e for e in events if e.get("event") == "worker.cannot_start"]
        assert gave_up, events
        assert gave_up[0]["device"] == device, gave_up
        assert "CUDA is not available" in (gave_up[0]["last_error"] or ""), gave_up
        assert not [e for e in events if e.get("event") == "worker.hello"], "a hello was sent"
    finally:
        daemon.close()


def test_the_unit_file_verifies() -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(
        [tool, "verify", str(UNIT)], capture_output=True, text=True, timeout=60, check=False
    )
    output = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    # The unit names where virnucd is installed on a server; on a development machine
    # that path is usually absent, which is the one complaint tolerated here.
    exec_start = re.search(r"^ExecStart=(\S+)", UNIT.read_text(), re.MULTILINE)
    assert exec_start is not None
    binary = exec_start.group(1)
    absent = f"{UNIT.name}: Command {binary} is not executable: No such file or directory"
    if os.access(binary, os.X_OK):
        assert result.returncode == 0, output
        assert not output, output
    else:
        assert result.returncode == 0 or output, "verify failed without saying why"
        assert all(line == absent for line in output), output
