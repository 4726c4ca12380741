"""daemon/notify.py: systemd's notify protocol over $NOTIFY_SOCKET (tests/e2e/
test_systemd.py runs virnucd under systemd itself)."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from virnuc.daemon.notify import Notifier


@pytest.fixture
def systemd() -> Iterator[tuple[str, socket.socket]]:
    """A socket standing in for systemd's (a short path: sun_path holds 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="notify-") as tmp:
        path = str(Path(tmp) / "n")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(path)
        listener.settimeout(5)
        yield path, listener
        listener.close()


def test_each_call_sends_its_fields_as_one_datagram(systemd: tuple[str, socket.socket]) -> None:
    path, listener = systemd
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert notifier.enabled
    assert notifier.watchdog_interval == 2.0  # half systemd's timeout

    notifier.ready("2 workers")
    notifier.watchdog()
    notifier.status("1 job running")
    notifier.stopping()
    notifier.close()

    assert [listener.recv(1024) for _ in range(4)] == [
        b"READY=1\nSTATUS=2 workers",
        b"WATCHDOG=1",
        b"STATUS=1 job running",
        b"STOPPING=1\nSTATUS=stopping",
    ]


def test_without_notify_socket_every_call_does_nothing() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    notifier.ready("up")  # must not raise
    notifier.close()


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with structlog.testing.capture_logs() as logs:
        notifier.watchdog()
    notifier.close()
    assert [e["event"] for e in logs] == ["notify.failed"]
