"""One unit's run: computes an assigned unit into contiguous parts and reports how it ended.

`UnitRun` runs the `Predictor` over the unit's `RecordFeed` (`virnuc.worker.unit_feed`),
cuts the finished records into parts for the `PartWriter` (every `checkpoint_every`
records, every `--checkpoint-seconds`, and at the end of the unit), sends `batch_done`
progress, and checks the cancel and stop flags at every block boundary. It ends the
unit with `unit_done`, silently (cancelled, stopped), or with a non-fatal `error`
after the acks of the parts finished before the failure.
"""

from __future__ import annotations

import contextlib
import enum
import time
from dataclasses import dataclass

from virnuc.disk_space import is_no_space
from virnuc.faults import Faults
from virnuc.pipeline.frame_cache import FrameCache
from virnuc.pipeline.models import ModelSet
from virnuc.pipeline.outputs import RecordResult
from virnuc.pipeline.predict import Predictor
from virnuc.protocol import Assign, BatchDone, UnitDone, WorkerError
from virnuc.worker.link import Flags, IoLink, Log
from virnuc.worker.part_writer import PartJob, PartWriteError, PartWriter
from virnuc.worker.unit_digest import UnitChanged
from virnuc.worker.unit_feed import RecordFeed, UnitInputError

PROGRESS_EVERY_S = 0.5  # batch_done throttle


class _Cancelled(Exception):
    """Raised at a block boundary when the daemon cancelled the unit's job."""


class _Stopping(Exception):
    """Raised at a block boundary when the worker was asked to stop."""


class Outcome(enum.Enum):
    DONE = "done"
    STOPPED = "stopped"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What every unit run shares: the threads, flags and settings of the process."""

    link: IoLink
    writer: PartWriter
    flags: Flags
    faults: Faults
    checkpoint_seconds: float
    block_frames: int
    # Rows of frames already scored, reused within one job only (None: no reuse).
    frame_cache: FrameCache | None = None


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
        self.records_done = self.frames_done = self.frames_reused = self.reported = 0
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
            # The next block is read and translated while this one is scored; the
            # feed's boundary checks (progress, cancel, stop) then run one block ahead.
            prefetch=True,
            # Identical frames are computed once, across the units of a job but never
            # across jobs: a job's owner must not learn (from a count, or a job that
            # runs faster) that someone else scored the same reads.
            frame_cache=self.ctx.frame_cache,
            frame_cache_mb=0,  # none configured: no reuse
            reuse_scope=self.assign.job_id,
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
        self.frames_reused += result.frames_reused
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
        """Keep what finished (valid parts shorten the retry), then report the failure.
        An input changed since submission keeps nothing more: the job fails for good."""
        a = self.assign
        changed = isinstance(exc, UnitChanged)
        if isinstance(exc, UnitInputError):
            record, reason = exc.record, exc.reason
        else:
            record, reason = self.feed.oldest_unfinished(), f"{type(exc).__name__}: {exc}"
        no_space = is_no_space(exc)  # expected on a full disk: no traceback
        self.log.error(
            "unit.failed",
            record=record,
            reason=reason,
            exc_info=None if no_space or changed else exc,
        )
        message = f"job {a.job_id} unit {a.unit_id} failed at record {record}: {reason}"
        if changed:
            message, self.done = str(exc), []
        with contextlib.suppress(Exception):
            self._cut()
        with contextlib.suppress(PartWriteError):
            self.ctx.writer.drain()  # always: the next unit must start with an empty queue
        self.ctx.link.send(
            WorkerError(
                message=message,
                fatal=False,
                job_id=a.job_id,
                unit_id=a.unit_id,
                no_space=no_space,  # the daemon waits for space instead of failing the job
                bad_input=changed or isinstance(exc, UnitInputError),
            )
        )

    def _finish(self, outcome: Outcome) -> Outcome:
        a = self.assign
        if self.ctx.flags.is_cancelled(a.job_id):  # parts may have been skipped
            self.log.info("unit.cancelled", records_done=self.records_done)
            return Outcome.CANCELLED
        if outcome is Outcome.DONE:
            self.ctx.link.send(UnitDone(job_id=a.job_id, unit_id=a.unit_id))
        self.log.info(
            f"unit.{outcome.value}",
            records=self.records_done,
            frames=self.frames_done,
            frames_reused=self.frames_reused,
        )
        return outcome
