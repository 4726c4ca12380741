"""The worker process: one per device, models kept warm, units computed into parts.

    python -m virnuc.worker.serve --endpoint ipc://STATE/workers.sock --worker-id w0
        [--device cpu|cuda|cuda:N] [--parent-pid PID] [--heartbeat-interval 1.0]
        [--checkpoint-seconds 300] [--block-frames 2048] [--frame-cache-mb 256]
        [--array-worker-ids s0,s1 --daemon-timeout S --idle-exit S]   (a Slurm pilot)

This module is the process's entry and its main loop (`Worker`): it sets the process
up (`virnuc.worker.process_setup`), starts the threads, takes the inbox in order and
keeps the models warm. One unit's computation is `virnuc.worker.unit_run`, fed its
input records by `virnuc.worker.unit_feed`.

Four threads, one job each:

* the **main thread computes**: it takes `assign`s from the inbox in order, loads the
  models when a unit needs others than those loaded, and runs each unit (`UnitRun`):
  the `Predictor` over its records, the finished records cut into parts (every
  `checkpoint_every` records, every `--checkpoint-seconds`, and at the end of the unit);
  a frame identical to one already scored in the same job is not computed again (a
  `FrameCache` of `--frame-cache-mb`, emptied when a unit of another job comes, or
  other models: another user never benefits from, nor learns of, a job's frames);
* while a unit runs, the **prefetch thread** (`pipeline.prefetch`) cuts the next block
  of frames (records read, frames translated, DNA tokenized) while the main thread
  scores the current one;
* the **I/O thread** (`IoLink`) owns the DEALER socket — zmq sockets are not
  thread-safe, so nothing else touches it. It says `hello`, heartbeats every interval
  (also while the main thread computes), sends what the other threads queue, and
  files incoming messages into the inbox; `cancel` and `shutdown` also raise flags
  the compute loop checks between blocks;
* the **part writer** (`PartWriter`) makes each part durable, then queues its
  `checkpoint` ack; its queue holds two parts, so memory stays bounded and compute
  only waits when the disk is slower than the models.

What the daemon sees: `hello`, then `heartbeat`s for the life of the process — or,
from a worker whose device cannot be used, one fatal `error` and no hello at all. Per
`assign`: [`models_loaded`] then `batch_done`s and `checkpoint`s interleaved (the
checkpoints contiguous from `start_record`), then `unit_done` once every record is in
an acked part. A model-load failure is one `error` (fatal=false) instead. A cancelled
unit ends silently (parts already acked stay acked). A failed unit ends with `error`
(fatal=false, naming the record) after the acks of the parts finished before the
failure, so they need not be recomputed. SIGTERM/SIGINT or `shutdown`: at the next
block boundary the finished records become an emergency part, its ack is delivered,
and the process exits 0 without `unit_done` (unless the unit happened to be complete).

A worker that ends of its own accord (`--idle-exit` seconds without a unit, or a stop)
sends `leaving` after its last acks, so the daemon neither backs off nor blames a unit
it still held. A Slurm pilot has no parent to watch: `--daemon-timeout` makes it exit
(code 4) when virnucd has been silent that long.

Exit codes (`virnuc.worker.exits`): 0 after a stop; 3 (`EXIT_FATAL`, after an `error`
with fatal=true) when the device is unusable or `VIRNUC_FAULT` is malformed; 4
(`EXIT_ORPHANED`) when the daemon is gone.

The protocol never uses stdout; logs are structlog lines on stderr. If the daemon
dies the worker dies too (PR_SET_PDEATHSIG, and the I/O thread watches the parent
pid). `VIRNUC_FAULT` kills the process at chosen moments for crash tests
(`virnuc.faults`).
"""

from __future__ import annotations

import argparse
import gc
import os
import queue
import sys
import time
from typing import Any

import structlog
import torch

from virnuc.faults import Faults, FaultSpecError
from virnuc.log_setup import configure_logging
from virnuc.model_wire import spec_from_wire
from virnuc.pipeline import gzip_index
from virnuc.pipeline.frame_cache import FrameCache
from virnuc.pipeline.gzip_index import GzipIndex
from virnuc.pipeline.models import ModelSet
from virnuc.protocol import (
    Assign,
    Cancel,
    FromDaemon,
    Hello,
    Leaving,
    ModelsLoaded,
    WireModelSpec,
    WorkerError,
)
from virnuc.worker.exits import EXIT_FATAL, EXIT_OK, EXIT_ORPHANED
from virnuc.worker.link import Flags, IoLink, Log
from virnuc.worker.part_writer import PartWriter
from virnuc.worker.process_setup import (
    DeviceUnavailable,
    adopt_parent,
    install_signal_handlers,
    parse_args,
    resolve_device,
    use_cpu_threads,
    versions,
)
from virnuc.worker.unit_run import UnitRun, WorkerContext

IDLE_POLL_S = 0.25  # how often an idle main thread looks at the stop flag


# --- the worker --------------------------------------------------------------------------


class Worker:
    """The main thread's loop: take messages in order, run units, keep models warm."""

    def __init__(
        self,
        ctx: WorkerContext,
        device: str,
        configured_device: str,
        log: Log,
        idle_exit: float | None = None,
    ):
        self.ctx = ctx
        self.device = device
        self.configured_device = configured_device
        self.log = log
        self.idle_exit = idle_exit
        self._models: ModelSet | None = None

    def serve(self) -> str:
        """Handle the inbox until a stop is requested (signal or `shutdown`) or, with
        `idle_exit`, no unit came for that long; returns why it ended."""
        idle_since = time.monotonic()
        while not self.ctx.flags.stop.is_set():
            try:
                message = self.ctx.link.inbox.get(timeout=IDLE_POLL_S)
            except queue.Empty:
                if self.idle_exit is not None and time.monotonic() - idle_since > self.idle_exit:
                    return f"idle for {self.idle_exit:g} s"
                continue
            self._handle(message)
            idle_since = time.monotonic()
        return "asked to stop"

    def _handle(self, message: FromDaemon) -> None:
        if isinstance(message, Assign):
            self._run_assign(message)
        elif isinstance(message, Cancel):
            self.ctx.flags.clear_cancel(message.job_id)
        # WorkerShutdown: the I/O thread has already raised the stop flag

    def _run_assign(self, assign: Assign) -> None:
        log = self.log.bind(job=assign.job_id, unit=assign.unit_id)
        if self.ctx.flags.is_cancelled(assign.job_id):
            log.info("unit.skipped_cancelled")
            return
        log.info("unit.start", start_record=assign.start_record, records=assign.record_count)
        try:
            models = self._models_for(assign.models, log)
        except Exception as exc:
            log.exception("models.load_failed")
            self._report_load_failure(assign, exc)
            return
        gzip_index.use(assign.input, gzip_index_of(assign), log)
        UnitRun(self.ctx, assign, models, log).run()

    def _models_for(self, spec: WireModelSpec, log: Log) -> ModelSet:
        """The loaded models if they match `spec`, else load (after freeing the old)."""
        wanted = spec_from_wire(spec)
        if self._models is not None and self._models.spec == wanted:
            return self._models
        self._release_models()
        started = time.monotonic()
        models = ModelSet.load(wanted, self.device)
        seconds = round(time.monotonic() - started, 3)
        self._models = models
        described = self._describe(models, seconds)
        log.info("models.loaded", **described)
        self.ctx.link.send(ModelsLoaded(worker_id=self.ctx.link.worker_id, models=described))
        return models

    def _release_models(self) -> None:
        if self._models is None:
            return
        self._models = None
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _describe(self, models: ModelSet, seconds: float) -> dict[str, Any]:
        spec = {k: v for k, v in models.spec.as_dict().items() if v is not None}
        return {
            **spec,
            "device": self.configured_device,
            "esm_dim": models.esm.dim,
            "dnabert_dim": models.dnabert.dim,
            "load_seconds": seconds,
        }

    def _report_load_failure(self, assign: Assign, exc: Exception) -> None:
        self.ctx.link.send(
            WorkerError(
                message=f"cannot load the models for job {assign.job_id}: "
                f"{type(exc).__name__}: {exc}",
                fatal=False,
                job_id=assign.job_id,
                unit_id=assign.unit_id,
            )
        )


# --- entry point -------------------------------------------------------------------------


def gzip_index_of(assign: Assign) -> GzipIndex | None:
    """The seek-point index the `assign` names for its gzip input (None: a plain input,
    or a daemon that sends none)."""
    if assign.gzip_index is None or assign.gzip_index_size is None:
        return None
    return GzipIndex(assign.gzip_index, assign.gzip_index_size, str(assign.gzip_index_sha256))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(stream=sys.stderr)
    log = structlog.get_logger("virnuc.worker").bind(worker_id=args.worker_id, pid=os.getpid())
    parent = adopt_parent(args.parent_pid)
    if parent is None:
        log.warning("worker.orphaned_at_start", parent_pid=args.parent_pid)
        return EXIT_ORPHANED
    if args.standby and not sys.stdin.readline():
        return EXIT_OK  # a warm standby the daemon no longer needs (stdin closed)
    flags = Flags()
    install_signal_handlers(flags)
    link = IoLink(
        args.endpoint,
        args.worker_id,
        args.heartbeat_interval,
        parent,
        flags,
        log,
        daemon_timeout=args.daemon_timeout,
    )
    # The device is checked before the hello: a hello means "ready to work", and the
    # daemon tells systemd READY=1 on it. A worker that cannot work sends one fatal
    # `error` instead, and the daemon counts a start that failed.
    try:
        faults = Faults.from_env()
        device = resolve_device(args.device)
    except (DeviceUnavailable, FaultSpecError) as exc:
        link.start(None)
        return _fatal(link, log, str(exc))
    threads = use_cpu_threads(device)
    link.start(
        Hello(worker_id=args.worker_id, pid=os.getpid(), device=args.device, versions=versions())
    )
    log.info("worker.started", endpoint=args.endpoint, device=args.device, cpu_threads=threads)
    faults.before_kill = link.close
    return _serve(args, link, flags, faults, device, log)


def _serve(
    args: argparse.Namespace, link: IoLink, flags: Flags, faults: Faults, device: str, log: Log
) -> int:
    writer = PartWriter(link, flags, faults, log)
    ctx = WorkerContext(
        link,
        writer,
        flags,
        faults,
        args.checkpoint_seconds,
        args.block_frames,
        FrameCache.of_megabytes(args.frame_cache_mb),
    )
    try:
        why = Worker(ctx, device, args.device, log, args.idle_exit).serve()
    except Exception as exc:  # a bug: say so on the channel, exit non-zero
        log.exception("worker.crashed")
        return _fatal(link, log, f"worker crashed: {type(exc).__name__}: {exc}")
    writer.stop()  # the emergency part's ack goes before `leaving`
    link.send(Leaving(worker_id=args.worker_id, reason=why))
    delivered = link.close()
    log.info("worker.stopped", reason=why, acks_delivered=delivered)
    return EXIT_OK


def _fatal(link: IoLink, log: Log, message: str) -> int:
    log.error("worker.fatal", message=message)
    link.send(WorkerError(message=message, fatal=True))
    link.close()
    return EXIT_FATAL


if __name__ == "__main__":
    sys.exit(main())
