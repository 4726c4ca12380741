"""How a worker process is started, watched and stopped: the supervisor's one seam.

The worker program is the same everywhere (`python -m virnuc.worker.boot`); only
where it runs differs. `backend = "local"` (this module) runs it as a subprocess of
virnucd, one per configured device, kept alive for good; `backend = "slurm"`
(`daemon/slots/slurm.py`) submits it as a Slurm array task, a *pilot*, when units wait
for a worker. A supervisor sees either through `WorkerProcess`, and asks its
`Launcher` when to start one (`PilotDemand`). How a launcher makes a start fast is
its own business: the local one keeps a warm spare per slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Protocol

from ..config import DaemonConfig


class WorkerProcess(Protocol):
    """One started worker, as its supervisor sees it."""

    remote: bool  # on another machine: no signal of ours reaches it, messages do

    @property
    def pid(self) -> int | None: ...  # a local process's pid; None for a pilot

    @property
    def returncode(self) -> int | None: ...  # None while it runs (or waits to)

    def info(self) -> dict[str, str]:
        """What `workers` shows about where it runs: backend, slurm_job_id, node."""
        ...

    async def running(self) -> str | None:
        """Wait until the program runs; None then, else why it never will."""
        ...

    async def wait(self) -> int: ...

    def ended_how(self) -> str:
        """How it ended, in words ("exited", or Slurm's final state)."""
        ...

    async def stop(self) -> None:
        """Ask it to write its emergency part and exit (it may still be starting)."""
        ...

    async def kill(self) -> None:
        """End it now, with no chance to write anything (a hung worker)."""
        ...


class Launcher(Protocol):
    demand: PilotDemand | None  # None: keep a worker up always (no pilots)

    async def launch(self, worker_id: str, device: str) -> WorkerProcess:
        """A worker for the slot `worker_id` on `device`, started now."""
        ...

    async def close(self) -> None:
        """At shutdown, after the supervisors: nothing it started may outlive virnucd."""
        ...


class PilotDemand:
    """How many units wait for a worker (the scheduler says) against how many pilots
    are starting for them (the supervisors say), so that a wave of N waiting units
    starts at most N pilots."""

    def __init__(self) -> None:
        self.waiting = 0
        self.starting = 0
        self._changed = asyncio.Event()

    def set_waiting(self, units: int) -> None:
        if units != self.waiting:
            self.waiting = units
            self._changed.set()

    async def claim(self, stopping: asyncio.Event) -> bool:
        """Wait until a unit waits that no starting pilot is for, and count one more
        starting; False when `stopping` is set first."""
        while self.waiting <= self.starting:
            self._changed.clear()
            changed = asyncio.create_task(self._changed.wait())
            stopped = asyncio.create_task(stopping.wait())
            await asyncio.wait({changed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            stopped.cancel()
            if stopping.is_set():
                return False
        self.starting += 1
        return True

    def release(self) -> None:
        """A pilot claimed with `claim` said hello or will never start."""
        self.starting -= 1
        self._changed.set()


def worker_arguments(config: DaemonConfig, device: str) -> list[str]:
    """The worker program and the options both backends give it (not its id)."""
    return [
        sys.executable,
        "-m",
        "virnuc.worker.boot",
        "--endpoint",
        config.workers_endpoint,
        "--device",
        device,
        "--heartbeat-interval",
        str(config.heartbeat_interval),
        "--checkpoint-seconds",
        str(config.checkpoint_seconds),
        "--block-frames",
        str(config.block_frames),
        "--frame-cache-mb",
        str(config.frame_cache_mb),
    ]


# --- local subprocesses ----------------------------------------------------------------


class LocalProcess:
    """A worker running as a subprocess of virnucd (and dying with it)."""

    remote = False

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def info(self) -> dict[str, str]:
        return {"backend": "local"}

    async def running(self) -> str | None:
        return None

    async def wait(self) -> int:
        return await self.process.wait()

    def ended_how(self) -> str:
        return "exited"

    async def stop(self) -> None:
        # SIGTERM, not a message: it also reaches a worker that is still starting.
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)

    async def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def activate(self) -> bool:
        """Let a warm standby (waiting on stdin) connect; False if it is gone."""
        stdin = self.process.stdin
        if self.process.returncode is not None or stdin is None:
            return False
        try:
            stdin.write(b"go\n")
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            await self.kill()
            return False
        return True


class LocalLauncher:
    """Workers as subprocesses: the device pinned with CUDA_VISIBLE_DEVICES, the
    daemon's pid given so the worker dies with it (worker/boot.py).

    With `warm_standby`, each slot has a spare: a process that has done its imports
    and waits for a line on stdin, spawned once the slot's worker is `standby_delay`
    old (a worker just (re)started would otherwise share its CPU with the spare's
    imports). `launch` hands the spare out, so replacing a dead worker costs no
    Python/torch start-up."""

    demand: PilotDemand | None = None

    def __init__(self, config: DaemonConfig, environment: dict[str, str] | None = None):
        self.config = config
        self.environment = environment or {}  # the worker socket's keys, if CURVE
        self._spares: dict[str, LocalProcess] = {}  # by slot
        self._preparing: dict[str, asyncio.Task[None]] = {}  # by slot: the next spare

    async def launch(self, worker_id: str, device: str) -> LocalProcess:
        spare = self._spares.pop(worker_id, None)
        process = spare if spare is not None and await spare.activate() else None
        if process is None:
            process = await self._spawn(worker_id, device, standby=False)
        if self.config.warm_standby:
            self._prepare_spare(worker_id, device, process)
        return process

    def _prepare_spare(self, worker_id: str, device: str, worker: LocalProcess) -> None:
        async def spawn_once_worker_is_old_enough() -> None:
            try:
                await asyncio.wait_for(worker.wait(), self.config.standby_delay)
            except TimeoutError:  # still running: a spare no longer slows its start
                self._spares[worker_id] = await self._spawn(worker_id, device, standby=True)

        previous = self._preparing.get(worker_id)
        if previous is not None:
            previous.cancel()
        self._preparing[worker_id] = asyncio.create_task(
            spawn_once_worker_is_old_enough(), name=f"spare-{worker_id}"
        )

    async def _spawn(self, worker_id: str, device: str, *, standby: bool) -> LocalProcess:
        env = {**os.environ, **self.environment}
        if device.startswith("cuda:"):
            env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
        else:
            env.setdefault("OMP_NUM_THREADS", str(self.config.threads_per_cpu_worker()))
        env["VIRNUC_CACHE_DIR"] = str(self.config.model_cache)
        env["VIRNUC_WORKER_NICE"] = str(self.config.worker_nice)
        command = [
            *worker_arguments(self.config, device),
            "--worker-id",
            worker_id,
            "--parent-pid",
            str(os.getpid()),
            *(["--standby"] if standby else []),
        ]
        stdin = asyncio.subprocess.PIPE if standby else asyncio.subprocess.DEVNULL
        process = await asyncio.create_subprocess_exec(
            *command, stdin=stdin, stdout=asyncio.subprocess.DEVNULL, env=env
        )
        return LocalProcess(process)

    async def close(self) -> None:
        """Kill the spares (each supervisor has ended its own worker)."""
        preparing = list(self._preparing.values())
        for task in preparing:
            task.cancel()
        await asyncio.gather(*preparing, return_exceptions=True)
        spares, self._spares = list(self._spares.values()), {}
        for spare in spares:
            await spare.kill()
