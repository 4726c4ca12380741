"""A worker's part writer: makes each part durable on its own thread, then acks it.

Its queue holds two parts, so memory stays bounded and compute only waits when the
disk is slower than the models.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from virnuc.disk_space import is_no_space
from virnuc.faults import Faults
from virnuc.parts import write_part
from virnuc.pipeline.outputs import RecordResult
from virnuc.protocol import (
    Assign,
    Checkpoint,
)
from virnuc.worker.link import Flags, IoLink, Log

PART_QUEUE = 2


# --- the part writer ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartJob:
    """Finished records waiting to become one part."""

    assign: Assign
    first_record: int
    end_offset: int
    results: list[RecordResult]
    embedding_dims: tuple[int, int] | None  # set when the job saves embeddings


class PartWriteError(RuntimeError):
    """Raised in the main thread when the writer could not write a part of the unit."""


class PartWriter:
    """Writes parts in order on its own thread, each followed by its `checkpoint` ack.

    After a failure (disk full...) it writes nothing more for the unit — a later part
    without the failed one would leave a gap — and the main thread sees the error at
    its next `submit` or `drain`. Parts of a cancelled job are skipped.
    """

    def __init__(self, link: IoLink, flags: Flags, faults: Faults, log: Log):
        self.link = link
        self.flags = flags
        self.faults = faults
        self.log = log
        self._queue: queue.Queue[PartJob | None] = queue.Queue(maxsize=PART_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="part-writer", daemon=True)
        self._thread.start()

    def reset(self) -> None:
        """Forget the previous unit's failure (the queue is empty between units)."""
        self._error = None

    def submit(self, job: PartJob) -> None:
        """Queue a part; blocks while two are already waiting."""
        self._raise_error()
        self._queue.put(job)

    def drain(self) -> None:
        """Wait until every queued part is written and its ack queued for sending."""
        self._queue.join()
        self._raise_error()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise PartWriteError(f"cannot write a checkpoint part: {self._error}") from self._error

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                if self._error is None and not self.flags.is_cancelled(job.assign.job_id):
                    self._write(job)
            except Exception as exc:
                if is_no_space(exc):  # expected, and said once by the unit: no traceback
                    self.log.error(
                        "part.write_failed", first_record=job.first_record, error=str(exc)
                    )
                else:
                    self.log.exception("part.write_failed", first_record=job.first_record)
                self._error = exc
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _write(self, job: PartJob) -> None:
        a = job.assign
        part = write_part(
            Path(a.parts_dir),
            job_id=a.job_id,
            unit_id=a.unit_id,
            first_record=job.first_record,
            end_offset=job.end_offset,
            results=job.results,
            embedding_dims=job.embedding_dims,
            fault=self.faults.hit,
        )
        self.link.send(
            Checkpoint(
                job_id=a.job_id,
                unit_id=a.unit_id,
                first_record=job.first_record,
                record_count=part.record_count,
                end_offset=job.end_offset,
                path=str(part.path),
                size=part.size,
                sha256=part.sha256,
                frames=part.frames,
                frames_reused=sum(result.frames_reused for result in job.results),
            )
        )
        self.log.info(
            "part.written", job=a.job_id, unit=a.unit_id, first_record=job.first_record,
            records=part.record_count, frames=part.frames, bytes=part.size,
        )  # fmt: skip
        self.faults.hit("after_ack")
