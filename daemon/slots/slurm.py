"""Workers as Slurm pilots: array tasks submitted when units wait, watched with squeue.

A *pilot* is an ordinary worker (hello, models kept warm across units, heartbeats,
parts, acks) that Slurm starts on a node of its choosing; it connects back to the
worker socket over tcp:// with CURVE. The supervisors of the `slurm_max_workers`
slots each ask for one when `PilotDemand` says units wait; the requests that arrive
together become one array job (`sbatch --array=0-(N-1)%MAX`), whose task i takes
the i-th slot's id. Only the Slurm command line is used (sbatch, squeue, scancel),
which is stable across versions and needs no binding to libslurm.

Each pilot's life in Slurm's words comes from one `squeue` per `slurm_poll_interval`
for all pilots. Pending in the queue is not hung: a supervisor's hello deadline
starts when its pilot runs. A pilot Slurm never starts (a DOWN partition, a bad
account) is cancelled after `slurm_start_timeout`, with Slurm's reason. Stopping
uses the worker's own stop (the `shutdown` message, else SIGTERM through
`scancel --signal=TERM`); `scancel` is the backstop, and at shutdown every array
this virnucd submitted is cancelled, so no pilot outlives it. A pilot whose virnucd
crashed exits by itself after `--daemon-timeout` without hearing from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import time

import structlog

from ..config import DaemonConfig
from .launcher import PilotDemand, worker_arguments

log = structlog.get_logger()

PILOT_JOB_NAME = "virnuc-pilot"  # what squeue shows for every pilot virnucd submits
WAVE_GATHER_S = 0.2  # slots that ask for a pilot within this much join one array job
SQUEUE_FORMAT = "%i|%T|%r|%N"  # ARRAYID_TASK, state, reason, node
# A pilot in one of these states runs no worker any more (COMPLETING: it exited and
# Slurm is cleaning up). A pilot that left squeue altogether has ended too.
ENDED_STATES = frozenset(
    {"BOOT_FAIL", "CANCELLED", "COMPLETED", "COMPLETING", "DEADLINE", "FAILED", "NODE_FAIL",
     "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT"}
)  # fmt: skip


class SlurmError(Exception):
    """A Slurm command failed; the message is its stderr."""


async def slurm_command(*args: str, env: dict[str, str] | None = None) -> str:
    """Run sbatch/squeue/scancel; its stdout, or SlurmError with its stderr."""
    try:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise SlurmError(f"cannot run {args[0]}: {exc}") from exc
    out, err = await process.communicate()
    if process.returncode != 0:
        message = err.decode(errors="replace").strip() or f"exit code {process.returncode}"
        raise SlurmError(f"{args[0]}: {message}")
    return out.decode(errors="replace")


def sbatch_command(config: DaemonConfig, worker_ids: list[str], device: str) -> list[str]:
    """One array job whose task i is the pilot of slot `worker_ids[i]`."""
    program = [
        *worker_arguments(config, device),
        "--array-worker-ids",
        ",".join(worker_ids),
        "--daemon-timeout",
        str(config.heartbeat_timeout),
        "--idle-exit",
        str(config.idle_exit),
    ]
    optional = {
        "--partition": config.slurm_partition,
        "--account": config.slurm_account,
        "--gres": config.slurm_gres or None,
        "--cpus-per-task": config.slurm_cpus,
        "--mem": config.slurm_mem,
        "--time": config.slurm_time,
    }
    logs = config.pilot_log_dir
    return [
        "sbatch",
        "--parsable",
        f"--job-name={PILOT_JOB_NAME}",
        f"--array=0-{len(worker_ids) - 1}%{config.slurm_max_workers}",
        *(f"{flag}={value}" for flag, value in optional.items() if value is not None),
        # SIGTERM to the program itself (exec'd by the batch shell) before the time
        # limit: it writes its emergency part. A preempted pilot is not requeued:
        # its slot submits a new one when units wait.
        f"--signal=B:TERM@{config.slurm_signal_seconds}",
        "--no-requeue",
        f"--chdir={logs}",
        f"--output={logs / 'pilot-%A_%a.log'}",
        *config.slurm_extra_args,
        "--wrap",
        "exec " + shlex.join(program),
    ]


class SlurmPilot:
    """One array task, from sbatch to its end; a supervisor's `WorkerProcess`."""

    def __init__(self, launcher: SlurmLauncher, worker_id: str):
        self.launcher = launcher
        self.worker_id = worker_id
        self.slurm_id: str | None = None  # ARRAYID_TASK once submitted
        self.state = "SUBMITTING"
        self.reason = ""  # Slurm's reason while pending
        self.node = ""
        self.submit_error: str | None = None
        self.submitted = asyncio.Event()
        self.started = asyncio.Event()  # RUNNING seen (or it ended)
        self.ended = asyncio.Event()

    pid = None
    remote = True

    @property
    def returncode(self) -> int | None:
        if not self.ended.is_set():
            return None
        return 0 if self.state in ("COMPLETED", "COMPLETING") else 1

    def info(self) -> dict[str, str]:
        info = {"backend": "slurm"}
        if self.slurm_id is not None:
            info["slurm_job_id"] = self.slurm_id
        if self.node:
            info["node"] = self.node
        return info

    async def running(self) -> str | None:
        await self.submitted.wait()
        if self.submit_error is not None:
            return f"sbatch failed: {self.submit_error}"
        timeout = self.launcher.config.slurm_start_timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.started.wait(), timeout)
        if self.ended.is_set():
            return f"Slurm pilot {self.slurm_id} ended before it ran ({self.state})"
        if self.started.is_set():
            return None
        reason = self.reason or "no reason given"
        await self.kill()
        return (
            f"Slurm pilot {self.slurm_id} did not start within {timeout:g} s "
            f"(slurm_start_timeout): pending, reason {reason}"
        )

    async def wait(self) -> int:
        await self.ended.wait()
        return self.returncode or 0

    def ended_how(self) -> str:
        return f"Slurm pilot {self.slurm_id} ended ({self.state})"

    async def stop(self) -> None:
        """SIGTERM to a running pilot (its emergency part); a pending one is cancelled."""
        if self.started.is_set():
            await self.launcher.scancel(self, "--signal=TERM", "--full")
        else:
            await self.launcher.scancel(self)

    async def kill(self) -> None:
        """Cancel it and wait until Slurm says it ended. Slurm kills in its own way
        (SIGCONT, SIGTERM, SIGKILL after KillWait; even `--signal=KILL` gets that), so
        a hung pilot that wakes may still write an emergency part: it is recorded as
        this slot's, because its unit goes to no one else before the end is seen."""
        await self.launcher.scancel(self)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), self.launcher.config.stop_grace)
        self.end("CANCELLED")  # Slurm never confirmed (a lost node): stop waiting

    def update(self, state: str, reason: str, node: str) -> None:
        if self.ended.is_set():
            return
        self.state, self.reason = state, reason
        self.node = node if node not in ("", "(null)") else self.node
        if state in ENDED_STATES:
            self.end(state)
        elif state not in ("PENDING", "CONFIGURING", "SUBMITTING"):
            self.started.set()  # RUNNING (or SUSPENDED, STOPPED: it has run)

    def end(self, state: str) -> None:
        if not self.ended.is_set():
            self.state = state
            self.ended.set()
            self.started.set()


class SlurmLauncher:
    """Submits pilots in waves, follows them in squeue, cancels them at shutdown. It
    keeps no warm spare: a pilot's spare would hold a second GPU allocation."""

    def __init__(self, config: DaemonConfig, environment: dict[str, str]):
        self.config = config
        self.demand: PilotDemand | None = PilotDemand()
        # No OMP_NUM_THREADS from here: virnucd's host cannot know a node's cores. A
        # pilot sizes its threads to what Slurm gave it there (SLURM_CPUS_PER_TASK,
        # its binding: `cpu_share.usable_cpus`), unless virnucd's own environment
        # sets OMP_NUM_THREADS, which passes through as the admin's override.
        self.environment = {
            **os.environ,
            **environment,
            "VIRNUC_CACHE_DIR": str(config.model_cache),
        }
        self._wave: list[SlurmPilot] = []
        self._wave_task: asyncio.Task[None] | None = None
        self._alive: dict[str, SlurmPilot] = {}  # by slurm id
        self._arrays: list[str] = []  # every array submitted, for the shutdown backstop
        self._poller: asyncio.Task[None] | None = None

    async def launch(self, worker_id: str, device: str) -> SlurmPilot:
        pilot = SlurmPilot(self, worker_id)
        self._wave.append(pilot)
        if self._wave_task is None:
            self._wave_task = asyncio.create_task(self._submit_wave(device), name="slurm-sbatch")
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll(), name="slurm-squeue")
        return pilot

    async def _submit_wave(self, device: str) -> None:
        await asyncio.sleep(WAVE_GATHER_S)  # the other slots of this wave ask meanwhile
        wave, self._wave, self._wave_task = self._wave, [], None
        ids = [pilot.worker_id for pilot in wave]
        await asyncio.to_thread(self.config.pilot_log_dir.mkdir, parents=True, exist_ok=True)
        try:
            out = await slurm_command(
                *sbatch_command(self.config, ids, device), env=self.environment
            )
        except SlurmError as exc:
            log.error("slurm.sbatch_failed", workers=ids, error=str(exc))
            for pilot in wave:
                pilot.submit_error = str(exc)
                pilot.end("NOT_SUBMITTED")
                pilot.submitted.set()
            return
        array = out.strip().split(";")[0]  # "ID" or "ID;CLUSTER"
        self._arrays.append(array)
        log.info("slurm.submitted", array=array, workers=ids)
        for index, pilot in enumerate(wave):
            pilot.slurm_id = f"{array}_{index}"
            pilot.state = "PENDING"
            self._alive[pilot.slurm_id] = pilot
            pilot.submitted.set()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.config.slurm_poll_interval)
            if self._alive:
                await self._update_states()

    async def _update_states(self) -> None:
        arrays = sorted({slurm_id.split("_")[0] for slurm_id in self._alive})
        try:
            out = await slurm_command(
                "squeue", "-h", "-r", "-t", "all", "-j", ",".join(arrays), "-o", SQUEUE_FORMAT
            )
        except SlurmError as exc:
            if "Invalid job id" not in str(exc):  # slurmctld busy or down: look again
                log.warning("slurm.squeue_failed", error=str(exc))
                return
            out = ""  # every array has left squeue
        seen = set()
        for line in out.splitlines():
            slurm_id, state, reason, node = ([*line.split("|"), "", "", ""])[:4]
            pilot = self._alive.get(slurm_id.strip())
            if pilot is not None:
                seen.add(pilot.slurm_id)
                pilot.update(state.strip(), reason.strip(), node.strip())
        for slurm_id, pilot in list(self._alive.items()):
            if slurm_id not in seen:
                pilot.end(pilot.state if pilot.state in ENDED_STATES else "GONE")
            if pilot.ended.is_set():
                del self._alive[slurm_id]

    async def scancel(self, pilot: SlurmPilot, *options: str) -> None:
        await pilot.submitted.wait()
        if pilot.slurm_id is None or pilot.ended.is_set():
            return
        try:
            await slurm_command("scancel", *options, pilot.slurm_id)
        except SlurmError as exc:
            log.warning("slurm.scancel_failed", pilot=pilot.slurm_id, error=str(exc))

    async def close(self) -> None:
        """Cancel every array this virnucd submitted and wait (bounded) until Slurm
        shows none of them pending or running."""
        if self._wave_task is not None:
            await self._wave_task
        if self._arrays:
            with contextlib.suppress(SlurmError):
                await slurm_command("scancel", *self._arrays)
            await self._wait_until_gone(time.monotonic() + self.config.stop_grace)
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)

    async def _wait_until_gone(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                out = await slurm_command("squeue", "-h", "-j", ",".join(self._arrays), "-o", "%i")
            except SlurmError:
                return  # "Invalid job id": all gone
            if not out.strip():
                return
            await asyncio.sleep(self.config.slurm_poll_interval)
        log.warning("slurm.pilots_remain", arrays=self._arrays)
