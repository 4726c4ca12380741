"""Plan a job's inputs into work units: contiguous ranges of records.

Two streaming passes over the inputs (FASTA or FASTQ, in order), both in a thread:
`scan_inputs` validates every file (so a broken record fails the job before any
model time is spent, naming its file and line), checks ids are unique across them
and counts the records; then the cutting pass finds the record starts, cuts units of
equal record counts, digests each unit's bytes (virnuc.input_digest: the worker that
reads the unit checks them) and hands the units to the progress log in batches,
waiting for each batch to be written (backpressure: a 10-million-record file never
sits in memory).

A unit never spans two files: each file is cut on its own (its last unit may be
short) and each unit records which input it reads (`input_index`). Record indices
run across the whole job, byte offsets are within the unit's file, so resuming,
parts and assembly need nothing new at a file boundary.

Re-planning after a daemon crash replays the same passes; the progress log accepts
units it already holds unchanged, so planning is idempotent.

The planner writes units, never the job's row: the scheduler's `JobBook` records the
input's fingerprint before planning starts and closes the plan with the totals
`plan_job` returns (daemon/jobs/book.py).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence

from virnuc.input_digest import CHUNK, new_digest
from virnuc.pipeline.fasta import open_binary
from virnuc.pipeline.fastq import HeaderLines
from virnuc.pipeline.inputs import detect_format, scan_inputs

from ..progress.log import JobRow, ProgressLog, UnitPlan
from .input_check import check_unchanged

BATCH = 1000
UNITS_PER_WORKER = 4  # small jobs still spread over every worker


class PlanningCancelled(Exception):
    """Raised inside the planning thread when the job was killed meanwhile."""


def unit_size(records: int, workers: int, max_records: int) -> int:
    """Records per unit: enough units to keep every worker busy, none over the cap."""
    return max(1, min(max_records, math.ceil(records / (workers * UNITS_PER_WORKER))))


async def plan_job(
    progress: ProgressLog, job: JobRow, *, workers: int, max_records: int, cancel: threading.Event
) -> tuple[int, int]:
    """Validate the input and record its units; returns (records, units) in all.

    `job.input_fingerprint` is the input as first planned (recorded by the scheduler
    before planning starts): the input for good, so a replayed plan checks it first."""
    loop = asyncio.get_running_loop()
    recorded = job.input_fingerprint
    check_unchanged(job.inputs, recorded)
    # A plan interrupted by a crash is replayed with the size it started with, even if
    # the worker count changed since (planning is never resumed once units run).
    planned = await progress.pending_units(job.job_id, limit=1)
    fixed_size = planned[0].record_count if planned else None

    def add(batch: list[UnitPlan]) -> None:
        if cancel.is_set():
            raise PlanningCancelled(job.job_id)
        asyncio.run_coroutine_threadsafe(progress.add_units(job.job_id, batch), loop).result()

    def plan() -> tuple[int, int]:
        counts = [scan.records for scan in scan_inputs(job.inputs)]
        size = fixed_size or unit_size(sum(counts), workers, max_records)
        batch: list[UnitPlan] = []
        units = 0
        for unit in plan_units(job.inputs, counts, size):
            batch.append(unit)
            units += 1
            if len(batch) >= BATCH:
                add(batch)
                batch = []
        if batch:
            add(batch)
        return sum(counts), units

    total, units = await asyncio.to_thread(plan)
    check_unchanged(job.inputs, recorded)  # not rewritten while it was being read
    return total, units


def plan_units(paths: Sequence[str], counts: Sequence[int], size: int) -> Iterator[UnitPlan]:
    """The job's units in input order: each file cut into units of `size` records
    (`counts`: each file's records, from the scan), numbered and indexed across files."""
    unit_id = base = 0  # the next unit's id; the first record index of the current file
    for input_index, (path, count) in enumerate(zip(paths, counts, strict=True)):
        for first, start, end, digest in unit_spans(path, size):
            records = min(size, count - first)
            yield UnitPlan(unit_id, start, base + first, records, end, digest, input_index)
            unit_id += 1
        base += count


def unit_spans(path: str | os.PathLike[str], size: int) -> Iterator[tuple[int, int, int, str]]:
    """(first record, start offset, end offset, digest) of each unit of `size` records
    of one file, FASTA or FASTQ; a unit's bytes run to the next unit's start, or to
    the end."""
    if detect_format(path) == "fastq":
        return _line_spans(path, size, HeaderLines().is_header)
    return _fasta_spans(path, size)


def _fasta_spans(path: str | os.PathLike[str], size: int) -> Iterator[tuple[int, int, int, str]]:
    """`unit_spans` of a FASTA file, in one pass of large reads. A record starts at a
    '>' that begins a line (as for `record_starts`)."""
    digest = new_digest()
    index = first = offset = 0  # records seen; the unit's first; the chunk's offset
    start = -1  # the current unit's start offset; -1 before the first record
    line_start = True  # the next chunk begins a line
    with open_binary(path) as raw:
        while chunk := raw.read(CHUNK):
            view = memoryview(chunk)
            taken = 0  # the chunk's bytes up to here are hashed into the current unit
            at = 0 if line_start and chunk.startswith(b">") else _next_header(chunk, 0)
            while at >= 0:
                if index % size == 0:
                    if start >= 0:
                        digest.update(view[taken:at])
                        yield first, start, offset + at, digest.hexdigest()
                    digest, first, start, taken = new_digest(), index, offset + at, at
                index += 1
                at = _next_header(chunk, at)
            if start >= 0:
                digest.update(view[taken:])
            offset += len(chunk)
            line_start = chunk.endswith(b"\n")
    if start >= 0:
        yield first, start, offset, digest.hexdigest()


def _line_spans(
    path: str | os.PathLike[str], size: int, is_header: Callable[[bytes], bool]
) -> Iterator[tuple[int, int, int, str]]:
    """`unit_spans` line by line, for a format where only the line layout tells a
    header (FASTQ: a quality line may begin with '@')."""
    digest = new_digest()
    index = first = offset = 0
    start = -1  # the current unit's start offset; -1 before the first record
    with open_binary(path) as raw:
        for line in raw:
            if is_header(line):
                if index % size == 0:
                    if start >= 0:
                        yield first, start, offset, digest.hexdigest()
                    digest, first, start = new_digest(), index, offset
                index += 1
            if start >= 0:
                digest.update(line)
            offset += len(line)
    if start >= 0:
        yield first, start, offset, digest.hexdigest()


def _next_header(chunk: bytes, after: int) -> int:
    """Where the next line beginning with '>' starts in `chunk` after `after`, or -1."""
    found = chunk.find(b"\n>", after)
    return found + 1 if found >= 0 else -1
