"""One supervisor per worker slot: keeps a worker process alive and reads its messages.

Two tasks per slot:

* the **lifecycle** task starts the worker through its `Launcher` (a local
  subprocess, or a Slurm pilot once units wait for one: daemon/slots/launcher.py), waits
  for its hello under a deadline (from when it runs: a pilot pending in Slurm's
  queue is not hung), watches it (exit, or heartbeat silence -> kill), reports a
  death to the scheduler and starts another when its `RestartPolicy` says
  (daemon/slots/restart_policy.py: exponential backoff; a slot whose worker fails to
  come up N times in a row is shown as `failed` with the reason, loudly, and retried
  at the backoff cap for as long as virnucd runs). A worker that said `leaving` (a
  pilot idle for its `idle_exit`, or one stopped by SIGTERM after its emergency part)
  ended normally: no backoff, and no blame on its unit.
* the **actor** loop handles the worker's messages in the order they were sent
  (the hub hands them to `deliver`, which notes when the worker was last heard):
  a checkpoint is verified (path, size, SHA-256) and told to the scheduler, which
  records it, before the `unit_done` behind it is passed on; the scheduler's inbox
  is first in, first out, so it records the part before it looks at the `unit_done`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import structlog

from virnuc.model_wire import spec_from_wire
from virnuc.parts import file_sha256
from virnuc.pipeline.spec import ModelSpec
from virnuc.protocol import (
    Assign,
    BatchDone,
    Cancel,
    Checkpoint,
    DaemonBeat,
    FromWorker,
    Hello,
    Leaving,
    ModelsLoaded,
    UnitDone,
    WorkerError,
    WorkerInfo,
    WorkerShutdown,
    WorkerState,
    worker_event,
)

from .. import scheduler_messages as sm
from ..actor import Actor
from ..config import DaemonConfig
from ..publisher import EventPublisher
from ..scheduler_messages import Assignment
from .hub import WorkerHub
from .launcher import Launcher, WorkerProcess
from .restart_policy import MAX_START_FAILURES, RestartPolicy

log = structlog.get_logger()


class WorkerSupervisor(Actor[FromWorker]):
    def __init__(
        self,
        worker_id: str,
        device: str,
        *,
        config: DaemonConfig,
        launcher: Launcher,
        hub: WorkerHub,
        events: EventPublisher,
        scheduler: Actor[Any],
    ):
        super().__init__(inbox_size=10_000)
        self.name = f"supervisor-{worker_id}"
        self.worker_id = worker_id
        self.device = device
        self.config = config
        self.launcher = launcher
        self.hub = hub
        self.events = events
        self.scheduler = scheduler
        self.state = WorkerState.STARTING
        self.pid: int | None = None
        self.models: ModelSpec | None = None  # what the worker has loaded
        self.model_loads = 0
        self.assignment: Assignment | None = None
        self.last_seen = time.monotonic()  # when the worker was last heard (`deliver`)
        self.ever_ready = asyncio.Event()  # set at the first hello (for READY=1)
        self._restarts = RestartPolicy(config.restart_backoff_max, config.healthy_run)
        # Set once its worker failed to start MAX_START_FAILURES times in a row; the
        # slot is still retried, and `start_error` says why until a worker comes up.
        self.start_failed = asyncio.Event()
        self.start_error: str | None = None
        self.last_failure: str | None = None  # why the last worker process ended
        self._hello = asyncio.Event()
        self._fatal_error: str | None = None  # what the current process said before dying
        self._leaving: str | None = None  # why it said it exits of its own accord
        self._stopping = asyncio.Event()  # set once, at shutdown
        self._process: WorkerProcess | None = None
        self._lifecycle: asyncio.Task[None] | None = None

    # --- what the hub, the scheduler and the control server see ----------------------
    # The scheduler decides which unit a worker computes; this supervisor alone changes
    # its worker's state and sends it messages (docs/architecture.md §2).

    def deliver(self, message: FromWorker) -> None:
        """The hub's route for this slot: note the time, then queue the message. The
        time is noted here, not when the loop gets to it, so a loop busy verifying a
        large part never mistakes its worker for a hung one."""
        self.last_seen = time.monotonic()
        try:
            self.inbox.put_nowait(message)
        except asyncio.QueueFull:
            log.error("worker.inbox_full", worker=self.worker_id, type=message.TYPE)

    def info(self) -> WorkerInfo:
        info = WorkerInfo(
            id=self.worker_id,
            pid=self.pid,
            device=self.device,
            state=self.state,
            model_loads=self.model_loads,
        )
        if self._process is not None:
            info.update(self._process.info())  # type: ignore[typeddict-item]
        if self.start_error is not None:
            info["error"] = self.start_error
        if self.assignment is not None:
            info["job_id"] = self.assignment.job_id
            info["unit"] = self.assignment.unit_id
        return info

    @property
    def idle(self) -> bool:
        """Up, and computing nothing: the scheduler may assign it a unit."""
        return self.state == WorkerState.IDLE and self.assignment is None

    async def assign(self, assignment: Assignment, message: Assign) -> bool:
        """Give the worker a unit; False if it is gone (its `WorkerDown` follows)."""
        self._set_state(WorkerState.BUSY, assignment)
        if await self.hub.send(self.worker_id, message):
            return True
        await self.release(assignment)
        return False

    async def release(self, assignment: Assignment, *, cancel: bool = False) -> None:
        """The scheduler took the unit back; if `cancel`, the worker drops it at its next
        batch. A worker that died with the unit has nothing to give back."""
        if self.assignment != assignment:
            return
        state = WorkerState.IDLE if self.state == WorkerState.BUSY else self.state
        self._set_state(state, None)
        if cancel:
            await self.hub.send(self.worker_id, Cancel(job_id=assignment.job_id))

    def _set_state(self, state: WorkerState, assignment: Assignment | None = None) -> None:
        self.state = state
        self.assignment = assignment
        self.events.publish(worker_event(self.info(), models_loaded=self.models is not None))

    # --- actor: the worker's messages, in order --------------------------------------

    async def setup(self) -> None:
        self._lifecycle = asyncio.create_task(self._keep_alive(), name=f"{self.name}-life")

    async def handle(self, message: FromWorker) -> None:
        match message:
            case Hello():
                self.models = spec_from_wire(message.models) if message.models else None
                log.info(
                    "worker.hello", worker=self.worker_id, pid=message.pid, device=message.device
                )
                self._hello.set()
            case Leaving():
                log.info("worker.leaving", worker=self.worker_id, reason=message.reason)
                self._leaving = message.reason
            case ModelsLoaded():
                self.models = spec_from_wire(message.models)
                self.model_loads += 1
            case BatchDone():
                await self.scheduler.tell(sm.Progress(self.worker_id, message))
            case Checkpoint():
                await self._checkpoint(message)
            case UnitDone():
                await self.scheduler.tell(sm.UnitFinished(self.worker_id, message))
            case WorkerError():
                if message.fatal:
                    self._fatal_error = message.message
                await self.scheduler.tell(sm.ErrorReported(self.worker_id, message))

    async def _checkpoint(self, ack: Checkpoint) -> None:
        """Verify the part on disk against the ack; the scheduler records it, or refuses
        it. Awaited here, so it is in the scheduler's inbox before any later message."""
        problem = await asyncio.to_thread(self._verify_part, ack)
        if problem is None:
            await self.scheduler.tell(sm.PartVerified(self.worker_id, ack))
        else:
            await self.scheduler.tell(sm.PartRefused(self.worker_id, ack, problem))

    def _verify_part(self, ack: Checkpoint) -> str | None:
        parts_dir = self.config.job_dir(ack.job_id) / "parts"
        path = Path(ack.path)
        if path.parent != parts_dir:
            return f"part path {path} is outside {parts_dir}"
        try:
            size = path.stat().st_size
        except OSError as exc:
            return f"part unreadable: {exc}"
        if size != ack.size:
            return f"part size {size} != acked {ack.size}"
        if file_sha256(path) != ack.sha256:
            return "part SHA-256 differs from the ack"
        return None

    # --- lifecycle: spawn, watch, respawn -------------------------------------------

    async def _keep_alive(self) -> None:
        """Respawn for as long as virnucd runs: a slot that cannot start is shown as
        `failed` with its reason and retried at the backoff cap, never abandoned."""
        while await self._wanted():
            self._restarts.started()
            said_hello = await self._run_once()
            if self._stopping.is_set():
                break
            after = self._restarts.ended(said_hello=said_hello, leaving=bool(self._leaving))
            if after.give_up:
                self._cannot_start(MAX_START_FAILURES)
            if after.delay:
                with contextlib.suppress(TimeoutError):  # a shutdown ends the wait
                    await asyncio.wait_for(self._stopping.wait(), after.delay)

    async def _wanted(self) -> bool:
        """Whether to start a worker now: always (local), or once units wait for one
        (pilots; the slot shows `vacant` meanwhile). False at shutdown."""
        if self.launcher.demand is None:
            return not self._stopping.is_set()
        self.ever_ready.set()  # a pilot slot is ready as it is: Slurm has the GPUs
        if self.state != WorkerState.FAILED:
            self._set_state(WorkerState.VACANT)
        return await self.launcher.demand.claim(self._stopping)

    def _cannot_start(self, attempts: int) -> None:
        log.error(
            "worker.cannot_start",
            worker=self.worker_id,
            device=self.device,
            attempts=attempts,
            last_error=self.last_failure,
            advice="check that the device exists and works (nvidia-smi), or configure "
            "another --device; the slot keeps being retried",
        )
        self.start_error = self.last_failure
        self._set_state(WorkerState.FAILED)
        self.start_failed.set()

    @property
    def _down_state(self) -> WorkerState:
        """What the slot shows while no worker is up: a failing slot stays `failed`."""
        return WorkerState.FAILED if self.start_error is not None else WorkerState.RESTARTING

    async def _run_once(self) -> bool:
        """Run one worker process to its end; True if it said hello."""
        self._hello.clear()
        self._fatal_error = None
        self._leaving = None
        self.pid = None
        process = await self.launcher.launch(self.worker_id, self.device)
        self._process = process
        self.pid = process.pid
        said_hello, not_started = await self._start(process)
        if said_hello:
            self.ever_ready.set()
            if self.start_error is not None:
                log.info("worker.recovered", worker=self.worker_id, device=self.device)
                self.start_error = None
            self._set_state(WorkerState.IDLE)
            await self.scheduler.tell(sm.WorkerUp(self.worker_id))
            reason = await self._watch(process)
        else:
            reason = not_started or (
                "no hello within the deadline" if process.returncode is None else "exited"
            )
            await process.kill()
        code = await process.wait()
        if reason == "exited":
            reason = process.ended_how()
        reason = death_reason(reason, code, self._fatal_error, said_hello)
        self.last_failure = reason
        self.pid = None
        self._process = None
        # Not idle any more before the scheduler hears of it: no unit may go to a corpse.
        # The lost unit travels in the message, so a quick respawn cannot erase it.
        lost = self.assignment
        self._set_state(WorkerState.STOPPING if self._stopping.is_set() else self._down_state)
        if self._leaving:
            reason = f"left: {self._leaving}"
        elif not self._stopping.is_set():
            log.warning("worker.died", worker=self.worker_id, reason=reason, returncode=code)
        blameless = self._leaving is not None
        await self.scheduler.tell(sm.WorkerDown(self.worker_id, reason, lost, blameless))
        return said_hello

    async def _start(self, process: WorkerProcess) -> tuple[bool, str | None]:
        """Wait for the process to run, then for its hello: (said hello, or why it
        never ran). A pilot that Slurm will not start fails the jobs that wait."""
        try:
            if process.remote:  # a pilot: pending in Slurm's queue, not hung
                self._set_state(WorkerState.QUEUED)
            not_started = await process.running()
            if not_started is not None:
                if not self._stopping.is_set():  # else: cancelled by this shutdown
                    log.error("worker.not_started", worker=self.worker_id, reason=not_started)
                    await self.scheduler.tell(sm.WorkersCannotStart(self.worker_id, not_started))
                return False, not_started
            starting = WorkerState.STARTING if self.start_error is None else WorkerState.FAILED
            self._set_state(starting)
            self.last_seen = time.monotonic()  # silence counts from its start, not before
            return await self._await_hello(process), None
        finally:
            if self.launcher.demand is not None:
                self.launcher.demand.release()

    async def _await_hello(self, process: WorkerProcess) -> bool:
        hello = asyncio.create_task(self._hello.wait())
        exited = asyncio.create_task(process.wait())
        done, _ = await asyncio.wait(
            {hello, exited}, timeout=self.config.hello_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for task in (hello, exited):
            task.cancel()
        return hello in done

    async def _watch(self, process: WorkerProcess) -> str:
        """Wait for the process to exit or go silent; kill it in the second case.

        Silence counts only time the daemon itself ran: it wakes every heartbeat
        interval, and a wake-up much later than asked means virnucd was paused (SIGSTOP,
        a suspended VM, a starved loop) with the worker's heartbeats still waiting in
        the socket unread; the worker then gets a full timeout from the wake-up."""
        exited = asyncio.create_task(process.wait())
        tick = self.config.heartbeat_interval
        heard_since = self.last_seen
        try:
            while True:
                now = time.monotonic()
                heard_since = max(heard_since, self.last_seen)
                silence = now - heard_since
                remaining = self.config.heartbeat_timeout - silence
                if remaining <= 0:
                    # Judge only after the hub has had a tick to read what waits in its
                    # socket: a pause that began outside the wait below is seen here.
                    done, _ = await asyncio.wait({exited}, timeout=tick)
                    if done:
                        return "exited" if not self._stopping.is_set() else "stopped"
                    if self.last_seen <= heard_since:
                        await process.kill()
                        return f"no heartbeat for {silence:.0f} s (hung)"
                    # Heard after all: virnucd was paused (or the worker was late).
                    log.warning("worker.silence_ended", worker=self.worker_id, seconds=silence)
                    continue
                timeout = min(remaining, tick)
                done, _ = await asyncio.wait({exited}, timeout=timeout)
                if done:
                    return "exited" if not self._stopping.is_set() else "stopped"
                if process.remote and not self._leaving:  # it has no parent to watch
                    await self.hub.send(self.worker_id, DaemonBeat())
                woke = time.monotonic()
                if woke - now - timeout > tick:  # the daemon did not run meanwhile
                    log.warning("daemon.was_paused", worker=self.worker_id, seconds=woke - now)
                    heard_since = woke
        finally:
            exited.cancel()

    # --- shutdown ---------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Ask the worker to checkpoint and exit; SIGKILL after the grace period."""
        self._stopping.set()
        process = self._process
        if process is not None and process.returncode is None:
            self._set_state(WorkerState.STOPPING, self.assignment)  # acks may still come
            # A pilot that is up gets the stop message; otherwise SIGTERM (a pending
            # pilot is cancelled), which also reaches a worker still starting.
            up = process.remote and self._hello.is_set()
            if not (up and await self.hub.send(self.worker_id, WorkerShutdown())):
                await process.stop()
            try:
                await asyncio.wait_for(process.wait(), self.config.stop_grace)
            except TimeoutError:
                await process.kill()
        if self._lifecycle is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._lifecycle
        await self.stop()  # drain the acks the worker sent on its way out


def death_reason(how: str, code: int, fatal_error: str | None, said_hello: bool) -> str:
    """Why a worker process ended, in words: the error it reported last (a device or
    model error), else the signal that killed it from outside."""
    if fatal_error:
        how = f"{how}: {fatal_error}"
    elif how == "exited" and code < 0:
        how = f"killed by {signal.Signals(-code).name}"
        if -code == signal.SIGKILL and not said_hello:
            how += " while starting (out of memory? see the kernel log: dmesg)"
    return f"{how} (exit code {code})"
