"""virnucd: the daemon's entry point, start-up order and two-stage shutdown.

    virnucd [--config FILE] [--state-dir DIR] [--device cpu|cuda|cuda:0,cuda:1]
            [--workers N] [--checkpoint-every N]

Runs in the foreground (systemd `Type=notify`). Signals become the same command a
client sends: SIGTERM and SIGINT request the shutdown that `virnucctl` can request.
Shutdown is two-staged: stop taking work and let every worker write a checkpoint and
exit (SIGKILL after the grace period), then close the sockets and the progress log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import structlog
import zmq
import zmq.asyncio

from virnuc import __version__
from virnuc.log_setup import configure_logging
from virnuc.protocol import daemon_event
from virnuc.protocol.constants import (
    CONTROL_SOCKET,
    EVENTS_SOCKET,
    PRECISIONS,
    WORKERS_SOCKET,
    needs_curve,
)

from . import access
from .access import AccessError, Listener
from .actor import Actor
from .caller import CallerSeal
from .config import ConfigError, DaemonConfig, load_config
from .control import ControlServer
from .handlers import DaemonContext
from .identify import Identify
from .jobs.scheduler import Scheduler
from .notify import Notifier
from .progress.log import ProgressLog, ProgressLogError
from .publisher import EventPublisher
from .retention import drop_old_jobs_daily
from .slots import keys as worker_keys
from .slots.hub import WorkerHub
from .slots.launcher import Launcher, LocalLauncher
from .slots.slurm import SlurmLauncher
from .slots.supervisor import WorkerSupervisor
from .subscriptions import owners_in
from .zap import ZapHandler

log = structlog.get_logger()

EXIT_INTERNAL = 1  # a part of virnucd died (a bug, or a dependency such as the database)
EXIT_CONFIG = 2
EXIT_STATE_DIR = 3  # another virnucd holds the state dir, or it cannot be used
EXIT_WORKERS = 4  # at start-up, no configured worker (e.g. a GPU) came up
STATUS_INTERVAL = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virnucd", description="the virnuc prediction daemon")
    parser.add_argument("--config", type=Path, help="TOML file with settings (see README)")
    parser.add_argument(
        "--state-dir", type=Path, help="default $VIRNUC_STATE_DIR or $XDG_STATE_HOME/virnuc"
    )
    parser.add_argument("--device", help="cpu (default), cuda, or cuda:0,cuda:1")
    parser.add_argument("--workers", type=int, help="CPU worker processes (default 1)")
    parser.add_argument(
        "--checkpoint-every", type=int, help="records per checkpoint part (default 10000)"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="jobs' default precision: fp32 (default, VirNucPro's numbers), tf32 or bf16",
    )
    parser.add_argument("--log-format", choices=["auto", "json", "console"])
    add_cluster_options(parser)
    parser.add_argument("--version", action="version", version=f"virnucd {__version__}")
    return parser


# The cluster settings, spelt as their config keys with dashes (README, Clusters).
CLUSTER_OPTIONS: dict[str, tuple[type, str]] = {
    "backend": (str, "where workers run: local (default) or slurm"),
    "worker_endpoint": (str, "the worker socket, e.g. tcp://HEAD:5555 (CURVE) for Slurm"),
    "parts_dir": (Path, "job parts, on a filesystem the nodes share (default in state dir)"),
    "slurm_partition": (str, "sbatch --partition"),
    "slurm_account": (str, "sbatch --account"),
    "slurm_gres": (str, "sbatch --gres (default gpu:1; '' for none)"),
    "slurm_cpus": (int, "sbatch --cpus-per-task"),
    "slurm_mem": (str, "sbatch --mem, e.g. 32G"),
    "slurm_time": (str, "sbatch --time, e.g. 24:00:00"),
    "slurm_max_workers": (int, "pilots at most at once (default 4)"),
    "slurm_start_timeout": (float, "seconds a pilot may stay pending (default 600)"),
    "idle_exit": (float, "seconds a pilot waits without a unit before it exits (default 60)"),
}


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("clusters")
    for key, (kind, text) in CLUSTER_OPTIONS.items():
        group.add_argument("--" + key.replace("_", "-"), dest=key, type=kind, help=text)
    group.add_argument(
        "--slurm-extra-arg",
        dest="slurm_extra_args",
        action="append",
        help="one more sbatch option, e.g. --slurm-extra-arg=--qos=long (repeatable)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    # Before any file: the database, the parts (workers inherit the umask) and the logs
    # virnucd writes are its own alone, whoever may pass through the state dir.
    os.umask(access.PRIVATE_UMASK)
    args = build_parser().parse_args(argv)
    overrides = {
        "state_dir": args.state_dir,
        "device": args.device,
        "workers": args.workers,
        "checkpoint_every": args.checkpoint_every,
        "precision": args.precision,
        "log_format": args.log_format,
        "slurm_extra_args": args.slurm_extra_args,
        **{key: getattr(args, key) for key in CLUSTER_OPTIONS},
    }
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"virnucd: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.log_format)
    try:
        lock = claim_state_dir(config.state_dir, config.group_id)
    except StateDirBusy as exc:
        print(f"virnucd: error: {exc}", file=sys.stderr)
        return EXIT_STATE_DIR
    with lock:
        try:
            access.restrict_existing(config.database, config.jobs_dir)
        except AccessError as exc:
            print(f"virnucd: error: {exc}", file=sys.stderr)
            return EXIT_STATE_DIR
        try:
            listener = Listener.from_config(config)  # reads the CURVE keys
        except AccessError as exc:
            print(f"virnucd: error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        return asyncio.run(Daemon(config, listener).run())


class StateDirBusy(Exception):
    """Raised by `claim_state_dir` when the state dir is in use or unusable."""


def claim_state_dir(state_dir: Path, gid: int | None = None) -> IO[str]:
    """Make the state dir ours and private (see access.py); hold its lock while we run."""
    try:
        access.prepare_state_dir(state_dir, gid)
    except AccessError as exc:
        raise StateDirBusy(str(exc)) from exc
    try:
        lock = (state_dir / "virnucd.lock").open("a+")
    except OSError as exc:
        raise StateDirBusy(f"cannot use state dir {state_dir}: {exc}") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StateDirBusy(f"another virnucd is running on {state_dir}") from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    remove_sockets(state_dir)  # left by a daemon that was killed
    return lock


class Daemon:
    def __init__(self, config: DaemonConfig, listener: Listener | None = None):
        self.config = config
        self.listener = listener or Listener(config.group_id)
        self.stopping = asyncio.Event()
        self.stop_reason = ""
        self.exit_code = 0
        self.notifier = Notifier()

    def request_shutdown(self, reason: str) -> None:
        if not self.stopping.is_set():
            self.stop_reason = reason
            self.stopping.set()

    async def run(self) -> int:
        try:
            progress = await ProgressLog.open(self.config.database)
        except ProgressLogError as exc:
            log.error("daemon.progress_log_unusable", error=str(exc))
            return EXIT_STATE_DIR
        context = zmq.asyncio.Context()
        # Who calls: our ZAP handler seals each connection's Caller with a key of this
        # process; it answers before any public socket binds, and until all are closed.
        seal = CallerSeal()
        zap = ZapHandler(context, Identify.from_config(self.config), seal)
        zap.start()
        try:
            await self._serve(context, progress, seal)
        finally:
            await zap.stop()
            await asyncio.shield(progress.close())
            context.term()
        log.info("daemon.stopped", reason=self.stop_reason)
        self.notifier.close()
        return self.exit_code

    async def _serve(
        self, context: zmq.asyncio.Context, progress: ProgressLog, seal: CallerSeal
    ) -> None:
        config = self.config
        events = EventPublisher(
            context, config.events, self.listener, seal=seal, owner_of=owners_in(progress)
        )
        keys = worker_keys.load_or_create(config.worker_keys_dir) if self._curve_workers else None
        hub = WorkerHub(
            context,
            config.workers_endpoint,
            config.max_message_size,
            keys.server if keys is not None else None,
        )
        launcher = make_launcher(config, keys.environment() if keys is not None else {})
        scheduler = Scheduler(
            config,
            progress,
            events,
            slots=lambda scheduler: self._supervisors(launcher, hub, events, scheduler),
            demand=launcher.demand,
        )
        supervisors = list(scheduler.workers.values())
        control = ControlServer(
            context,
            config.control,
            DaemonContext(config, progress, scheduler, self.request_shutdown),
            self.listener,
            seal=seal,
        )
        if not self._bind_public(events, control):
            return
        self._watch(events.start())
        with access.private_umask(gid=None):  # 0600 even with a group: only our workers
            hub.start()
        self._watch(scheduler.start())
        try:
            await scheduler.started()  # resuming jobs reads the whole database
        except Exception:
            await self._shutdown(scheduler, [], launcher, control, hub, events)
            return
        for supervisor in supervisors:
            self._watch(supervisor.start())
        control.start()
        self._install_signals()
        background = [
            asyncio.create_task(self._announce_ready(supervisors, scheduler, events)),
            asyncio.create_task(self._keep_systemd_informed(supervisors, scheduler)),
            asyncio.create_task(drop_old_jobs_daily(progress, config.retention_days)),
        ]
        log.info(
            "daemon.ready",
            version=__version__,
            state_dir=str(config.state_dir),
            control=config.control,
            workers=[s.device for s in supervisors],
        )
        await self.stopping.wait()
        log.info("daemon.stopping", reason=self.stop_reason)
        self.notifier.stopping()
        events.publish(daemon_event("stopping"))
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self._shutdown(scheduler, supervisors, launcher, control, hub, events)

    def _watch(self, task: asyncio.Task[None] | None) -> None:
        """An actor that ends before shutdown is a bug or a broken dependency (a damaged
        database): say so at once and exit non-zero, so systemd restarts virnucd. It
        never keeps serving with a dead part."""

        def ended(task: asyncio.Task[None]) -> None:
            if self.stopping.is_set() or task.cancelled():
                return
            error = task.exception()
            log.error(
                "daemon.actor_died",
                actor=task.get_name(),
                error=repr(error) if error else "it returned",
                exc_info=error,
            )
            self.exit_code = EXIT_INTERNAL
            self.request_shutdown(f"{task.get_name()} died")

        if task is not None:
            task.add_done_callback(ended)

    def _bind_public(self, events: EventPublisher, control: ControlServer) -> bool:
        """Bind the client-facing sockets before any worker starts; False if one cannot."""
        try:
            events.bind()
            control.bind()
        except AccessError as exc:
            log.error("daemon.cannot_listen", error=str(exc))
            events.close()
            self.stop_reason = "cannot listen"
            self.exit_code = EXIT_CONFIG
            return False
        return True

    @property
    def _curve_workers(self) -> bool:
        return needs_curve(self.config.workers_endpoint)

    def _supervisors(
        self,
        launcher: Launcher,
        hub: WorkerHub,
        events: EventPublisher,
        scheduler: Actor[Any],
    ) -> list[WorkerSupervisor]:
        """One supervisor per configured device, each given its route in the hub."""
        prefix = "s" if self.config.backend == "slurm" else "w"  # s: a Slurm pilot's slot
        supervisors = [
            WorkerSupervisor(
                f"{prefix}{i}",
                device,
                config=self.config,
                launcher=launcher,
                hub=hub,
                events=events,
                scheduler=scheduler,
            )
            for i, device in enumerate(self.config.devices())
        ]
        for supervisor in supervisors:
            hub.route(supervisor.worker_id, supervisor.deliver)
        return supervisors

    async def _announce_ready(
        self, supervisors: list[WorkerSupervisor], scheduler: Scheduler, events: EventPublisher
    ) -> None:
        """READY=1 once every slot either came up or failed to start; virnucd serves
        with the slots that came up (the others keep being retried) and stops only
        when none did."""

        async def settled(supervisor: WorkerSupervisor) -> None:
            ready = asyncio.create_task(supervisor.ever_ready.wait())
            failed = asyncio.create_task(supervisor.start_failed.wait())
            await asyncio.wait({ready, failed}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            failed.cancel()

        await asyncio.gather(*(settled(s) for s in supervisors))
        never = [s for s in supervisors if not s.ever_ready.is_set()]
        for supervisor in never:
            log.error(
                "daemon.worker_never_started",
                worker=f"worker {supervisor.worker_id} on {supervisor.device}",
                reason=supervisor.start_error,
                advice="check the device exists and its driver works (nvidia-smi)",
            )
        if len(never) == len(supervisors):
            self.exit_code = EXIT_WORKERS
            self.request_shutdown("no worker could start")
            return
        self.notifier.ready(status_line(supervisors, scheduler))
        events.publish(daemon_event("running"))
        log.info("daemon.workers_ready", workers=len(supervisors) - len(never))

    async def _keep_systemd_informed(
        self, supervisors: list[WorkerSupervisor], scheduler: Scheduler
    ) -> None:
        """WATCHDOG=1 from this loop (a wedged loop misses it) and a STATUS= line."""
        interval = min(self.notifier.watchdog_interval or STATUS_INTERVAL, STATUS_INTERVAL)
        if not self.notifier.enabled:
            return
        while True:
            self.notifier.watchdog()
            self.notifier.status(status_line(supervisors, scheduler))
            await asyncio.sleep(interval)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_shutdown, f"signal {sig.name}")

    async def _shutdown(
        self,
        scheduler: Scheduler,
        supervisors: list[WorkerSupervisor],
        launcher: Launcher,
        control: ControlServer,
        hub: WorkerHub,
        events: EventPublisher,
    ) -> None:
        """Stage 1: no new work; workers checkpoint and exit. Stage 2: close everything."""
        await scheduler.stop_accepting()
        await asyncio.gather(*(s.shutdown() for s in supervisors))
        await launcher.close()  # no pilot or warm spare outlives virnucd
        await scheduler.stop()
        await control.stop()
        await hub.stop()
        with contextlib.suppress(Exception):
            await events.stop()
        remove_sockets(self.config.state_dir)


def make_launcher(config: DaemonConfig, environment: dict[str, str]) -> Launcher:
    """The configured backend; `environment` carries the worker socket's keys."""
    if config.backend == "slurm":
        return SlurmLauncher(config, environment)
    return LocalLauncher(config, environment)


SOCKETS = (CONTROL_SOCKET, EVENTS_SOCKET, WORKERS_SOCKET)


def status_line(supervisors: list[WorkerSupervisor], scheduler: Scheduler) -> str:
    states = [s.state.value for s in supervisors]
    workers = ", ".join(f"{states.count(v)} {v}" for v in dict.fromkeys(states))
    failing = "".join(
        f"; {s.worker_id} ({s.device}) cannot start: {s.start_error}"
        for s in supervisors
        if s.start_error is not None
    )
    return f"{len(scheduler.book)} unfinished job(s); workers: {workers}{failing}"


def remove_sockets(state_dir: Path) -> None:
    """ipc:// leaves socket files behind; a client finding none knows no one listens."""
    for name in SOCKETS:
        (state_dir / name).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
