"""The local launcher's warm spare, with fake subprocesses: when a spare is spawned,
that `launch` hands it out, and that nothing it started outlives `close`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from virnuc.daemon.config import DaemonConfig
from virnuc.daemon.slots.launcher import LocalLauncher, LocalProcess

from tests.support.poll import until

pytestmark = pytest.mark.asyncio

DEADLINE = 10.0


class FakeStdin:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        pass


class FakeProcess:
    """A subprocess that runs until it is signalled."""

    def __init__(self, pid: int, standby: bool) -> None:
        self.pid = pid
        self.standby = standby
        self.stdin = FakeStdin() if standby else None
        self.returncode: int | None = None
        self._exited = asyncio.Event()

    def send_signal(self, sig: int) -> None:
        self.exit(-sig)

    def exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode


class Spawned:
    """Replaces the launcher's `_spawn`: notes every process it would have started."""

    def __init__(self) -> None:
        self.processes: list[FakeProcess] = []

    async def __call__(self, worker_id: str, device: str, *, standby: bool) -> LocalProcess:
        self.processes.append(FakeProcess(1000 + len(self.processes), standby))
        return LocalProcess(self.processes[-1])  # type: ignore[arg-type]

    @property
    def spares(self) -> list[FakeProcess]:
        return [p for p in self.processes if p.standby]


@pytest_asyncio.fixture
async def launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: Any
) -> AsyncIterator[tuple[LocalLauncher, Spawned]]:
    settings = getattr(request, "param", {})
    config = DaemonConfig(state_dir=tmp_path, **{"standby_delay": 0.05, **settings})
    made, spawned = LocalLauncher(config), Spawned()
    monkeypatch.setattr(made, "_spawn", spawned)
    yield made, spawned
    await made.close()


async def test_a_spare_is_spawned_once_the_worker_is_old_enough_and_replaces_it(
    launcher: tuple[LocalLauncher, Spawned],
) -> None:
    local, spawned = launcher
    worker = await local.launch("w0", "cpu")
    assert spawned.spares == []  # not while the worker itself starts
    await until(lambda: spawned.spares, "the spare")
    spare = spawned.spares[0]
    worker.process.exit(-9)  # type: ignore[attr-defined]
    replacement = await local.launch("w0", "cpu")
    assert replacement.process is spare
    assert spare.stdin is not None
    assert spare.stdin.written == b"go\n"  # the spare was told to connect
    assert len(spawned.processes) == 2  # nothing started from scratch


async def test_a_worker_that_dies_young_gets_no_spare(
    launcher: tuple[LocalLauncher, Spawned],
) -> None:
    local, spawned = launcher
    worker = await local.launch("w0", "cpu")
    worker.process.exit(1)  # type: ignore[attr-defined]
    await asyncio.wait_for(local._preparing["w0"], DEADLINE)  # it decided
    assert spawned.spares == []


async def test_a_dead_spare_is_not_handed_out(launcher: tuple[LocalLauncher, Spawned]) -> None:
    local, spawned = launcher
    worker = await local.launch("w0", "cpu")
    await until(lambda: spawned.spares, "the spare")
    spawned.spares[0].exit(-9)  # e.g. the OOM killer
    worker.process.exit(-9)  # type: ignore[attr-defined]
    replacement = await local.launch("w0", "cpu")
    assert replacement.process is spawned.processes[-1]
    assert not replacement.process.standby  # type: ignore[attr-defined]


@pytest.mark.parametrize("launcher", [{"warm_standby": False}], indirect=True)
async def test_no_spare_without_warm_standby(launcher: tuple[LocalLauncher, Spawned]) -> None:
    local, spawned = launcher
    await local.launch("w0", "cpu")
    assert local._preparing == {}  # none will ever be spawned
    assert spawned.spares == []


async def test_close_kills_the_spares(launcher: tuple[LocalLauncher, Spawned]) -> None:
    local, spawned = launcher
    await local.launch("w0", "cpu")
    await until(lambda: spawned.spares, "the spare")
    await local.close()
    assert spawned.spares[0].returncode is not None
