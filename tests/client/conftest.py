"""The client tests' fake virnucd (tests/support/fake_daemon.py), started per test, and
the poll interval of `virnucctl wait` set for the test at hand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from virnuc.client import follow

from tests.support.fake_daemon import FakeDaemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(tmp_path / "state")
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Poll ``status`` every 10 ms: the test is then driven by polls, not events."""
    monkeypatch.setattr(follow, "POLL_INTERVAL", 0.01)


@pytest.fixture
def no_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Poll only once a minute: only an event can end the test in time."""
    monkeypatch.setattr(follow, "POLL_INTERVAL", 60.0)
