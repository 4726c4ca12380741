"""A worker slot's supervisor in-process: real asyncio, real SQLite, real part files.

The worker is faked at the protocol boundary: its messages are the protocol's own
dataclasses delivered as the hub would, what the supervisor sends lands in a fake hub,
and its process is a fake that exits when signalled, so the lifecycle (hello deadline,
hang detection, respawn, giving up) runs without spawning anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from virnuc.daemon import scheduler_messages as sm
from virnuc.daemon.config import DaemonConfig
from virnuc.daemon.progress.log import NewJob, ProgressLog, UnitPlan
from virnuc.daemon.scheduler_messages import Assignment
from virnuc.daemon.slots.launcher import LocalProcess
from virnuc.daemon.slots.restart_policy import MAX_START_FAILURES
from virnuc.daemon.slots.supervisor import WorkerSupervisor
from virnuc.parts import write_part
from virnuc.pipeline.outputs import RecordResult
from virnuc.pipeline.spec import ModelSpec
from virnuc.protocol import (
    Assign,
    Cancel,
    Checkpoint,
    FromDaemon,
    Heartbeat,
    Hello,
    ModelsLoaded,
    UnitDone,
    WireModelSpec,
    WorkerError,
    WorkerState,
)

from tests.support.poll import until

pytestmark = pytest.mark.asyncio

DEADLINE = 10.0
JOB = "j1"
SPEC = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300)


class FakeHub:
    """The worker ROUTER as a supervisor sees it: `send` succeeds while `connected`."""

    def __init__(self) -> None:
        self.sent: list[FromDaemon] = []
        self.connected = True

    async def send(self, worker_id: str, message: FromDaemon) -> bool:
        if self.connected:
            self.sent.append(message)
        return self.connected


class FakeScheduler:
    """Collects what the supervisor tells the scheduler, in order."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.order: list[type] = []  # the type of every message told, in order

    async def tell(self, message: Any) -> None:
        self.order.append(type(message))
        await self.inbox.put(message)

    async def next(self, kind: type) -> Any:
        """The next message of `kind`, skipping others (e.g. WorkerUp)."""
        while True:
            message = await asyncio.wait_for(self.inbox.get(), DEADLINE)
            if isinstance(message, kind):
                return message


class FakeProcess:
    """A worker process that lives until it is signalled (or told to `exit`)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = None
        self.signals: list[int] = []
        self._exited = asyncio.Event()

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        self.exit(-sig)

    def exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode


class FakeLauncher:
    """Launches `FakeProcess`es as local workers, noting each in `processes`."""

    demand = None

    def __init__(self) -> None:
        self.processes: list[FakeProcess] = []

    async def launch(self, worker_id: str, device: str) -> LocalProcess:
        self.processes.append(FakeProcess(pid=1000 + len(self.processes)))
        return LocalProcess(self.processes[-1])  # type: ignore[arg-type]

    async def close(self) -> None:
        pass


@dataclasses.dataclass
class Slot:
    supervisor: WorkerSupervisor
    hub: FakeHub
    scheduler: FakeScheduler
    progress: ProgressLog
    config: DaemonConfig
    processes: list[FakeProcess]


async def make_slot(tmp: Path, **config: Any) -> Slot:
    daemon_config = DaemonConfig(state_dir=tmp, **config)
    progress = await ProgressLog.open(daemon_config.database)
    await progress.create_job(NewJob(JOB, str(tmp / "in.fa"), str(tmp / "out"), SPEC, 2))
    await progress.add_units(JOB, [UnitPlan(0, 0, 0, 4)])
    await progress.finish_planning(JOB, 4, 1)
    hub, scheduler, launcher = FakeHub(), FakeScheduler(), FakeLauncher()
    supervisor = WorkerSupervisor(
        "w0",
        "cpu",
        config=daemon_config,
        launcher=launcher,
        hub=hub,  # type: ignore[arg-type]
        events=_NoEvents(),  # type: ignore[arg-type]
        scheduler=scheduler,  # type: ignore[arg-type]
    )
    return Slot(supervisor, hub, scheduler, progress, daemon_config, launcher.processes)


class _NoEvents:
    def publish(self, frames: list[bytes]) -> None:
        pass


@pytest_asyncio.fixture
async def slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Slot]:
    """A supervisor whose actor loop runs, but no lifecycle (no process at all)."""
    made = await make_slot(tmp_path)

    async def no_lifecycle() -> None:
        pass

    monkeypatch.setattr(made.supervisor, "setup", no_lifecycle)
    made.supervisor.start()
    yield made
    await made.supervisor.stop()
    await made.progress.close()


def write(slot: Slot, first: int, count: int) -> Checkpoint:
    results = [
        RecordResult(f"r{i}", 120, 1, [f"r{i}_chunk_1F1"], np.array([[0.5, 0.5]], np.float32))
        for i in range(first, first + count)
    ]
    parts_dir = slot.config.job_dir(JOB) / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    part = write_part(
        parts_dir,
        job_id=JOB,
        unit_id=0,
        first_record=first,
        end_offset=10 * (first + count),
        results=results,
    )
    return Checkpoint(
        job_id=JOB,
        unit_id=0,
        first_record=first,
        record_count=count,
        end_offset=10 * (first + count),
        path=str(part.path),
        size=part.size,
        sha256=part.sha256,
        frames=part.frames,
    )


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def assignment(start: int = 0) -> Assignment:
    return Assignment("w0", JOB, 0, 0, start, 4)


def assign_message(start: int = 0) -> Assign:
    models = WireModelSpec(
        esm=SPEC.esm, dnabert=SPEC.dnabert, classifier=SPEC.classifier, chunk_length=300
    )
    return Assign(
        job_id=JOB,
        unit_id=0,
        input="/in.fa",
        start_offset=0,
        start_record=start,
        record_count=4 - start,
        models=models,
        save_embeddings=False,
        checkpoint_every=2,
        parts_dir="/parts",
    )


# --- checkpoints: verified, recorded, reported in the order sent ---------------------


async def test_verified_parts_reach_the_scheduler_before_the_unit_done_behind_them(
    slot: Slot,
) -> None:
    """The scheduler records what it is told in inbox order (tests/test_scheduler.py),
    so a `unit_done` is looked at only once the parts sent before it are recorded."""
    first, second = write(slot, 0, 2), write(slot, 2, 2)
    for message in (first, second, UnitDone(job_id=JOB, unit_id=0)):
        slot.supervisor.deliver(message)
    told = [await slot.scheduler.next(sm.PartVerified) for _ in range(2)]
    assert [m.ack for m in told] == [first, second]
    finished = await slot.scheduler.next(sm.UnitFinished)
    assert finished.done.unit_id == 0
    assert slot.scheduler.order == [sm.PartVerified, sm.PartVerified, sm.UnitFinished]
    assert await slot.progress.parts_of_unit(JOB, 0) == []  # the scheduler records them


async def test_a_retried_ack_is_verified_again_and_told_again(slot: Slot) -> None:
    ack = write(slot, 0, 2)
    slot.supervisor.deliver(ack)
    slot.supervisor.deliver(ack)
    told = [(await slot.scheduler.next(sm.PartVerified)).ack for _ in range(2)]
    assert told == [ack, ack]  # the scheduler's record_part counts it once


async def test_a_part_whose_bytes_changed_after_its_ack_is_refused_and_not_recorded(
    slot: Slot,
) -> None:
    ack = write(slot, 0, 2)
    flip_a_byte(Path(ack.path))
    slot.supervisor.deliver(ack)
    refused = await slot.scheduler.next(sm.PartRefused)
    assert refused.problem == "part SHA-256 differs from the ack"
    assert await slot.progress.parts_of_unit(JOB, 0) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"size": 1}, "part size"),
        ({"path": "/etc/passwd"}, "is outside"),
    ],
)
async def test_a_part_that_does_not_match_its_ack_or_place_is_refused(
    slot: Slot, change: dict[str, Any], problem: str
) -> None:
    ack = dataclasses.replace(write(slot, 0, 2), **change)
    slot.supervisor.deliver(ack)
    refused = await slot.scheduler.next(sm.PartRefused)
    assert problem in refused.problem
    assert await slot.progress.parts_of_unit(JOB, 0) == []


async def test_loaded_models_are_kept_as_the_spec_they_describe(slot: Slot) -> None:
    described = {**SPEC.as_dict(), "esm_dim": 320, "dnabert_dim": 768, "load_seconds": 1.5}
    slot.supervisor.deliver(ModelsLoaded(worker_id="w0", models=described))
    slot.supervisor.deliver(UnitDone(job_id=JOB, unit_id=0))  # a marker: models came first
    await slot.scheduler.next(sm.UnitFinished)
    assert slot.supervisor.models == SPEC
    assert slot.supervisor.model_loads == 1


# --- what the scheduler asks: assign, release, cancel --------------------------------


async def test_assign_sends_the_unit_and_cancel_tells_the_worker_to_drop_it(slot: Slot) -> None:
    supervisor = slot.supervisor
    supervisor._set_state(WorkerState.IDLE)  # as after its hello
    assert supervisor.idle
    assert await supervisor.assign(assignment(), assign_message())
    assert (supervisor.state, supervisor.idle) == (WorkerState.BUSY, False)
    assert (supervisor.info()["job_id"], supervisor.info()["unit"]) == (JOB, 0)
    await supervisor.release(assignment(), cancel=True)
    assert slot.hub.sent == [assign_message(), Cancel(job_id=JOB)]
    assert (supervisor.state, supervisor.idle) == (WorkerState.IDLE, True)


async def test_releasing_a_unit_the_worker_no_longer_holds_changes_nothing(slot: Slot) -> None:
    supervisor = slot.supervisor
    supervisor._set_state(WorkerState.IDLE)
    await supervisor.assign(assignment(start=2), assign_message(start=2))
    await supervisor.release(assignment(start=0), cancel=True)  # an older assignment
    assert supervisor.assignment == assignment(start=2)
    assert slot.hub.sent == [assign_message(start=2)]


async def test_an_assign_to_a_disconnected_worker_fails_and_leaves_it_holding_nothing(
    slot: Slot,
) -> None:
    supervisor = slot.supervisor
    supervisor._set_state(WorkerState.IDLE)
    slot.hub.connected = False
    assert not await supervisor.assign(assignment(), assign_message())
    assert supervisor.assignment is None


# --- lifecycle: a fake process, real deadlines ---------------------------------------


@contextlib.asynccontextmanager
async def running_slot(tmp: Path, **config: Any) -> AsyncIterator[Slot]:
    """A started supervisor whose spawned workers are `FakeProcess`es."""
    settings = {"hello_timeout": 0.2, "heartbeat_timeout": 0.3, "restart_backoff_max": 0.01}
    made = await make_slot(tmp, **{**settings, **config})
    made.supervisor.start()
    try:
        yield made
    finally:
        await made.supervisor.shutdown()
        await made.progress.close()


@pytest_asyncio.fixture
async def living_slot(tmp_path: Path) -> AsyncIterator[Slot]:
    async with running_slot(tmp_path) as made:
        yield made


async def say_hello(slot: Slot, index: int) -> None:
    """Wait for process `index` to be spawned, then answer as its worker would."""
    await until(lambda: len(slot.processes) > index, f"process {index} to be spawned")
    process = slot.processes[index]
    slot.supervisor.deliver(Hello(worker_id="w0", pid=process.pid, device="cpu", versions={}))
    await until(lambda: slot.supervisor.state == WorkerState.IDLE, "the slot to be idle")


async def test_a_worker_that_dies_reports_the_unit_it_held_though_the_slot_respawns_at_once(
    tmp_path: Path,
) -> None:
    """A worker older than `healthy_run` is respawned with no backoff at all (issue 11.1)."""
    async with running_slot(tmp_path, healthy_run=0.001) as slot:
        await say_hello(slot, 0)
        await slot.scheduler.next(sm.WorkerUp)
        await slot.supervisor.assign(assignment(), assign_message())
        slot.processes[0].exit(-9)  # SIGKILLed from outside
        down = await slot.scheduler.next(sm.WorkerDown)
        assert down.lost == assignment()
        assert "exit code -9" in down.reason
        await until(lambda: len(slot.processes) == 2, "the respawn")
        assert slot.supervisor.assignment is None


async def test_a_worker_that_goes_silent_is_killed_as_hung(living_slot: Slot) -> None:
    slot = living_slot
    await say_hello(slot, 0)
    slot.supervisor.deliver(Heartbeat(worker_id="w0"))
    down = await slot.scheduler.next(sm.WorkerDown)
    assert "no heartbeat" in down.reason
    assert slot.processes[0].signals == [signal.SIGKILL]


async def test_a_slot_that_cannot_start_is_shown_failed_and_retried_until_it_comes_up(
    living_slot: Slot,
) -> None:
    slot = living_slot
    await asyncio.wait_for(slot.supervisor.start_failed.wait(), DEADLINE)
    assert len(slot.processes) >= MAX_START_FAILURES
    assert all(p.signals == [signal.SIGKILL] for p in slot.processes[:MAX_START_FAILURES])
    info = slot.supervisor.info()
    assert info["state"] == WorkerState.FAILED
    assert "no hello within the deadline" in info.get("error", "")
    downs = [m for m in _drain(slot.scheduler) if isinstance(m, sm.WorkerDown)]
    assert len(downs) >= MAX_START_FAILURES
    attempts = len(slot.processes)
    await until(lambda: len(slot.processes) > attempts, "another attempt")  # never abandoned
    await say_hello(slot, len(slot.processes) - 1)
    assert "error" not in slot.supervisor.info()


async def test_a_worker_killed_while_starting_is_told_apart_from_one_that_reported_an_error(
    living_slot: Slot,
) -> None:
    slot = living_slot
    await until(lambda: slot.processes, "a spawn")
    slot.processes[0].exit(-9)  # the OOM killer, while it loads torch
    down = await slot.scheduler.next(sm.WorkerDown)
    assert down.reason.startswith("killed by SIGKILL while starting (out of memory?")
    await until(lambda: len(slot.processes) == 2, "the respawn")
    slot.supervisor.deliver(WorkerError(message="CUDA is not available", fatal=True))
    await until(lambda: slot.supervisor._fatal_error, "the error to be read")
    slot.processes[1].exit(1)
    down = await slot.scheduler.next(sm.WorkerDown)
    assert down.reason == "exited: CUDA is not available (exit code 1)"


def _drain(scheduler: FakeScheduler) -> list[Any]:
    messages = []
    while not scheduler.inbox.empty():
        messages.append(scheduler.inbox.get_nowait())
    return messages


async def test_shutdown_signals_the_worker_and_reports_it_stopped(living_slot: Slot) -> None:
    slot = living_slot
    await say_hello(slot, 0)
    await slot.supervisor.shutdown()
    assert slot.processes[0].signals == [signal.SIGTERM]
    assert slot.supervisor.state == WorkerState.STOPPING
    assert len(slot.processes) == 1  # no respawn while stopping


def heartbeat(slot: Slot) -> None:
    """What the hub does with a heartbeat: deliver it (`deliver` notes the time)."""
    slot.supervisor.deliver(Heartbeat(worker_id="w0"))


async def test_a_paused_daemon_does_not_kill_its_healthy_worker(
    tmp_path: Path, monkeypatch
) -> None:
    slot = await make_slot(
        tmp_path, hello_timeout=5, heartbeat_timeout=0.3, heartbeat_interval=0.05
    )

    slot.supervisor.start()
    try:
        await say_hello(slot, 0)
        heartbeat(slot)
        time.sleep(0.6)  # noqa: ASYNC251  # the fault: virnucd's loop stopped for 2 timeouts
        await asyncio.sleep(0.02)  # the watch's overdue timer runs before the reader
        loop = asyncio.get_running_loop()
        until_then = loop.time() + 0.6
        while loop.time() < until_then:  # the worker's heartbeats, read after the pause
            heartbeat(slot)
            await asyncio.sleep(0.05)
        assert slot.processes[0].signals == []
        assert not [m for m in _drain(slot.scheduler) if isinstance(m, sm.WorkerDown)]
        # ... and a worker that then goes silent is still caught.
        await until(lambda: slot.processes[0].signals == [signal.SIGKILL], "the hang kill")
    finally:
        await slot.supervisor.shutdown()
        await slot.progress.close()
