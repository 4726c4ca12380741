"""The worker process: one per device, models kept warm, units computed into parts.

    python -m virnuc.worker.serve --endpoint ipc://STATE/workers.sock --worker-id w0
        [--device cpu|cuda|cuda:N] [--parent-pid PID] [--heartbeat-interval 1.0]
        [--checkpoint-seconds 300] [--block-frames 2048]

Three threads, one job each:

* the **main thread computes**: it takes `assign`s from the inbox in order, loads the
  models when a unit needs others than those loaded, runs the `Predictor`, and cuts
  the finished records into parts (every `checkpoint_every` records, every
  `--checkpoint-seconds`, and at the end of the unit);
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

Exit codes: 0 after a stop; 3 (`EXIT_FATAL`, after an `error` with fatal=true) when the
device is unusable or `VIRNUC_FAULT` is malformed; 4 when the daemon is gone.

The protocol never uses stdout; logs are structlog lines on stderr. If the daemon
dies the worker dies too (PR_SET_PDEATHSIG, and the I/O thread watches the parent
pid). `VIRNUC_FAULT` kills the process at chosen moments for crash tests
(`virnuc.faults`).
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import gc
import importlib.metadata
import os
import platform
import queue
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import structlog
import torch

from virnuc.faults import Faults, FaultSpecError
from virnuc.log_setup import configure_logging
from virnuc.model_wire import spec_from_wire
from virnuc.pipeline.fasta import FastaRecord, read_records
from virnuc.pipeline.models import ModelSet
from virnuc.pipeline.outputs import RecordResult
from virnuc.pipeline.predict import Predictor
from virnuc.protocol import (
    Assign,
    BatchDone,
    Cancel,
    FromDaemon,
    Hello,
    ModelsLoaded,
    UnitDone,
    WireModelSpec,
    WorkerError,
)
from virnuc.worker.boot import EXIT_ORPHANED, arm_parent_death
from virnuc.worker.link import EXIT_FATAL, EXIT_OK, Flags, IoLink, Log
from virnuc.worker.part_writer import PartJob, PartWriteError, PartWriter

IDLE_POLL_S = 0.25  # how often an idle main thread looks at the stop flag
PROGRESS_EVERY_S = 0.5  # batch_done throttle
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


# --- command line ----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m virnuc.worker.serve", description="virnucd's per-device worker."
    )
    parser.add_argument("--endpoint", required=True, help="the daemon's worker ROUTER")
    parser.add_argument("--worker-id", required=True, help="routing id, e.g. w0")
    parser.add_argument("--device", default="cpu", type=_device, help="cpu, cuda or cuda:N")
    parser.add_argument("--parent-pid", type=int, help="the daemon's pid (exit if not ours)")
    parser.add_argument("--heartbeat-interval", type=_positive, default=1.0, metavar="S")
    parser.add_argument("--checkpoint-seconds", type=_positive, default=300.0, metavar="S")
    parser.add_argument(
        "--block-frames", type=_positive_int, default=2048, help="frames embedded per block"
    )
    parser.add_argument(
        "--half",
        action="store_true",
        help="bf16 (fp16 where unsupported) on CUDA; ignored on CPU, which stays float32",
    )
    parser.add_argument(
        "--standby",
        action="store_true",
        help="import everything, then wait for a line on stdin before connecting",
    )
    return parser.parse_args(argv)


def _device(text: str) -> str:
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not cpu, cuda or cuda:N")
    return text


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


# --- process guards ----------------------------------------------------------------------


def adopt_parent(expected: int | None) -> int | None:
    """Die with the daemon: PR_SET_PDEATHSIG, then close the race it leaves open.

    Returns the parent pid to watch, or None when the parent is already gone (the
    daemon died between fork and prctl, and we were re-parented). Note: the kernel
    sends the signal when the *thread* that forked us exits, so the daemon must spawn
    workers from a thread that lives as long as it does (its event loop thread).
    """
    arm_parent_death()
    parent = os.getppid()
    return None if expected is not None and parent != expected else parent


def resolve_device(name: str) -> str:
    """The torch device for `--device`; raises DeviceUnavailable, never falls back.

    The supervisor starts a `cuda:N` worker with CUDA_VISIBLE_DEVICES=N, so inside it
    the GPU is `cuda:0`; without that variable the index is used as given.
    """
    if name == "cpu":
        return name
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise DeviceUnavailable(
            f"--device {name}: CUDA is not available in this process "
            f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES={visible}); not falling back to CPU"
        )
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return "cuda:0"
    index = int(name.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise DeviceUnavailable(f"--device {name}: only {torch.cuda.device_count()} GPU(s) seen")
    return name


class DeviceUnavailable(RuntimeError):
    """Raised by `resolve_device` when the configured device cannot be used."""


def versions() -> dict[str, str]:
    """Package versions for Hello, read from metadata (no import of torch needed)."""
    found = {"python": platform.python_version()}
    for name in ("virnuc", "torch", "transformers", "fair-esm"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


# --- one unit ----------------------------------------------------------------------------


class UnitFailed(Exception):
    """Raised inside a unit for a problem tied to one record (bad or missing input)."""

    def __init__(self, record: int, reason: str):
        super().__init__(f"record {record}: {reason}")
        self.record = record
        self.reason = reason


class _Cancelled(Exception):
    """Raised at a block boundary when the daemon cancelled the unit's job."""


class _Stopping(Exception):
    """Raised at a block boundary when the worker was asked to stop."""


class Outcome(enum.Enum):
    DONE = "done"
    STOPPED = "stopped"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class _InFlight:
    index: int
    record_id: str
    end_offset: int


class RecordFeed:
    """The unit's records for the Predictor, remembered until their results return.

    Results come back in input order, so each result pops the oldest record: that
    gives its index and the byte offset just past it (the resume offset). The
    Predictor asks for the next record only after yielding every finished result,
    so each request is a block boundary: `on_boundary` reports progress there and
    raises to stop or cancel.

    Bad input (unreadable, too short, a wrong start offset) does not raise here: the
    feed ends, the Predictor finishes the records before it, and `failure` says why,
    so the work done up to the bad record is still saved.
    """

    def __init__(self, assign: Assign, on_boundary: Callable[[], None]):
        self.assign = assign
        self.on_boundary = on_boundary
        self.pulled = 0
        self.failure: UnitFailed | None = None
        self._in_flight: deque[_InFlight] = deque()

    def __iter__(self) -> Iterator[FastaRecord]:
        a = self.assign
        # read_records is a generator: close it explicitly so the file is released at once
        records = cast(
            Generator[FastaRecord, None, None],
            read_records(
                a.input, offset=a.start_offset, first_index=a.start_record, count=a.record_count
            ),
        )
        with contextlib.closing(records):
            while True:
                self.on_boundary()
                record = self._next(records)
                if record is None:
                    return
                self._in_flight.append(_InFlight(record.index, record.id, record.end_offset))
                self.pulled += 1
                yield record

    def _next(self, records: Iterator[FastaRecord]) -> FastaRecord | None:
        """The next record, or None at the end of the unit or at bad input."""
        a, index = self.assign, self.assign.start_record + self.pulled
        try:
            record = next(records, None)
        except Exception as exc:
            self.failure = UnitFailed(index, f"cannot read the input: {exc}")
            return None
        if record is None and self.pulled < a.record_count:
            self.failure = UnitFailed(
                index, f"the input ends there, but the unit expects {a.record_count} records "
                f"from record {a.start_record}; was {a.input} changed since it was planned?",
            )  # fmt: skip
        elif record is not None and self.pulled == 0 and record.offset != a.start_offset:
            self.failure = UnitFailed(
                index, f"byte offset {a.start_offset} is not the start of a record"
            )
            return None
        return record

    def finish(self, result: RecordResult) -> _InFlight:
        """The record `result` belongs to (the oldest one handed out)."""
        record = self._in_flight.popleft()
        if record.record_id != result.record_id:  # would mean results out of order: a bug
            raise RuntimeError(f"result for {result.record_id} where {record.record_id} was due")
        return record

    def oldest_unfinished(self) -> int:
        """The record a failure is blamed on when no better one is known."""
        if self._in_flight:
            return self._in_flight[0].index
        return self.assign.start_record + self.pulled


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What every unit run shares: the threads, flags and settings of the process."""

    link: IoLink
    writer: PartWriter
    flags: Flags
    faults: Faults
    checkpoint_seconds: float
    block_frames: int


class UnitRun:
    """Computes one assigned unit into contiguous parts and reports how it ended."""

    def __init__(self, ctx: WorkerContext, assign: Assign, models: ModelSet, log: Log):
        self.ctx = ctx
        self.assign = assign
        self.models = models
        self.log = log
        self.feed = RecordFeed(assign, self._boundary)
        self.dims = (models.dnabert.dim, models.esm.dim) if assign.save_embeddings else None
        self.done: list[RecordResult] = []
        self.next_first = assign.start_record  # first record of the next part
        self.end_offset = assign.start_offset
        self.records_done = self.frames_done = self.reported = 0
        self.last_cut = time.monotonic()
        self.last_report = float("-inf")

    def run(self) -> Outcome | None:
        """Compute, cut, drain, report; returns None when the unit failed."""
        self.ctx.writer.reset()
        try:
            outcome = self._compute()
            if outcome is Outcome.CANCELLED:
                self._abandon()
                return outcome
            self._cut()  # the last part, or the emergency part when stopping
            self.ctx.writer.drain()
        except Exception as exc:
            self._fail(exc)
            return None
        return self._finish(outcome)

    def _compute(self) -> Outcome:
        predictor = Predictor(
            self.models,
            keep_embeddings=self.assign.save_embeddings,
            block_frames=self.ctx.block_frames,
        )
        try:
            for result in predictor.predict(self.feed):
                self._take(result)
        except _Cancelled:
            return Outcome.CANCELLED
        except _Stopping:
            return Outcome.STOPPED
        if self.feed.failure is not None:
            raise self.feed.failure
        return Outcome.DONE

    def _take(self, result: RecordResult) -> None:
        record = self.feed.finish(result)
        self.done.append(result)
        self.end_offset = record.end_offset
        self.records_done += 1
        self.frames_done += len(result.frame_ids)
        due = time.monotonic() - self.last_cut >= self.ctx.checkpoint_seconds
        if len(self.done) >= self.assign.checkpoint_every or due:
            self._cut()

    def _cut(self) -> None:
        """Hand the finished records to the writer as the next contiguous part."""
        if self.done:
            self.ctx.writer.submit(
                PartJob(self.assign, self.next_first, self.end_offset, self.done, self.dims)
            )
            self.next_first += len(self.done)
            self.done = []
        self.last_cut = time.monotonic()

    def _boundary(self) -> None:
        self._report_progress()
        if self.ctx.flags.is_cancelled(self.assign.job_id):
            raise _Cancelled
        if self.ctx.flags.stop.is_set():
            raise _Stopping

    def _report_progress(self) -> None:
        now = time.monotonic()
        if self.records_done == self.reported or now - self.last_report < PROGRESS_EVERY_S:
            self.ctx.faults.hit("mid_unit")
            return
        a = self.assign
        self.ctx.link.send(
            BatchDone(
                job_id=a.job_id,
                unit_id=a.unit_id,
                records_done=self.records_done,
                frames_done=self.frames_done,
            )
        )
        self.reported, self.last_report = self.records_done, now
        self.ctx.faults.hit("mid_unit")

    def _abandon(self) -> None:
        """Cancelled: drop unwritten results; queued parts are skipped by the writer."""
        self.done = []
        with contextlib.suppress(PartWriteError):
            self.ctx.writer.drain()
        self.log.info("unit.cancelled", records_done=self.records_done)

    def _fail(self, exc: Exception) -> None:
        """Keep what finished (valid parts shorten the retry), then report the failure."""
        if isinstance(exc, UnitFailed):
            record, reason = exc.record, exc.reason
        else:
            record, reason = self.feed.oldest_unfinished(), f"{type(exc).__name__}: {exc}"
        self.log.error("unit.failed", record=record, reason=reason, exc_info=exc)
        with contextlib.suppress(Exception):
            self._cut()
        with contextlib.suppress(PartWriteError):
            self.ctx.writer.drain()  # always: the next unit must start with an empty queue
        a = self.assign
        self.ctx.link.send(
            WorkerError(
                message=f"job {a.job_id} unit {a.unit_id} failed at record {record}: {reason}",
                fatal=False,
                job_id=a.job_id,
                unit_id=a.unit_id,
            )
        )

    def _finish(self, outcome: Outcome) -> Outcome:
        a = self.assign
        if self.ctx.flags.is_cancelled(a.job_id):  # parts may have been skipped
            self.log.info("unit.cancelled", records_done=self.records_done)
            return Outcome.CANCELLED
        if outcome is Outcome.DONE:
            self.ctx.link.send(UnitDone(job_id=a.job_id, unit_id=a.unit_id))
        self.log.info(f"unit.{outcome.value}", records=self.records_done, frames=self.frames_done)
        return outcome


# --- the worker --------------------------------------------------------------------------


class Worker:
    """The main thread's loop: take messages in order, run units, keep models warm."""

    def __init__(
        self, ctx: WorkerContext, device: str, configured_device: str, log: Log, half: bool
    ):
        self.ctx = ctx
        self.device = device
        self.configured_device = configured_device
        self.log = log
        self.half = half
        self._models: ModelSet | None = None

    def serve(self) -> None:
        """Until a stop is requested (signal or `shutdown`), handle the inbox."""
        while not self.ctx.flags.stop.is_set():
            try:
                message = self.ctx.link.inbox.get(timeout=IDLE_POLL_S)
            except queue.Empty:
                continue
            self._handle(message)

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
        UnitRun(self.ctx, assign, models, log).run()

    def _models_for(self, spec: WireModelSpec, log: Log) -> ModelSet:
        """The loaded models if they match `spec`, else load (after freeing the old)."""
        wanted = spec_from_wire(spec)
        if self._models is not None and self._models.spec == wanted:
            return self._models
        self._release_models()
        started = time.monotonic()
        models = ModelSet.load(wanted, self.device, half=self.half)
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
    _install_signal_handlers(flags)
    link = IoLink(args.endpoint, args.worker_id, args.heartbeat_interval, parent, flags, log)
    # The device is checked before the hello: a hello means "ready to work", and the
    # daemon tells systemd READY=1 on it. A worker that cannot work sends one fatal
    # `error` instead, and the daemon counts a start that failed.
    try:
        faults = Faults.from_env()
        device = resolve_device(args.device)
    except (DeviceUnavailable, FaultSpecError) as exc:
        link.start(None)
        return _fatal(link, log, str(exc))
    link.start(
        Hello(worker_id=args.worker_id, pid=os.getpid(), device=args.device, versions=versions())
    )
    log.info("worker.started", endpoint=args.endpoint, device=args.device)
    faults.before_kill = link.close
    return _serve(args, link, flags, faults, device, log)


def _serve(
    args: argparse.Namespace, link: IoLink, flags: Flags, faults: Faults, device: str, log: Log
) -> int:
    writer = PartWriter(link, flags, faults, log)
    ctx = WorkerContext(link, writer, flags, faults, args.checkpoint_seconds, args.block_frames)
    try:
        Worker(ctx, device, args.device, log, args.half).serve()
    except Exception as exc:  # a bug: say so on the channel, exit non-zero
        log.exception("worker.crashed")
        return _fatal(link, log, f"worker crashed: {type(exc).__name__}: {exc}")
    writer.stop()
    delivered = link.close()
    log.info("worker.stopped", acks_delivered=delivered)
    return EXIT_OK


def _fatal(link: IoLink, log: Log, message: str) -> int:
    log.error("worker.fatal", message=message)
    link.send(WorkerError(message=message, fatal=True))
    link.close()
    return EXIT_FATAL


def _install_signal_handlers(flags: Flags) -> None:
    """SIGTERM and SIGINT (Ctrl-C reaches the whole process group) only raise a flag."""

    def request_stop(signum: int, frame: object) -> None:
        flags.stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


if __name__ == "__main__":
    sys.exit(main())
