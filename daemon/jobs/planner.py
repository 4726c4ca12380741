"""Plan a job's inputs into work units: contiguous ranges of records.

Two streaming passes over the inputs (FASTA or FASTQ, in order), both in a thread:
`scan_inputs` validates every file (so a broken record fails the job before any
model time is spent, naming its file and line), checks ids are unique across them
and counts the records; then the cutting pass finds the record starts, cuts units of
equal record counts, digests each unit's bytes (virnuc.input_digest: the worker that
reads the unit checks them), indexes each gzip input into the job's directory as it
reads it (pipeline/gzip_index.py: the scan, through the standard library, has checked
its CRCs already) and hands the units to the progress log in batches,
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
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, NamedTuple

from virnuc.input_digest import CHUNK, new_digest
from virnuc.pipeline import gzip_index
from virnuc.pipeline.fasta import open_binary
from virnuc.pipeline.fastq import HeaderLines
from virnuc.pipeline.gzip_index import GzipIndex
from virnuc.pipeline.inputs import detect_format, scan_inputs

from ..progress.log import JobRow, ProgressLog, UnitPlan
from .input_check import check_unchanged

BATCH = 1000
UNITS_PER_WORKER = 4  # small jobs still spread over every worker


class PlanTotals(NamedTuple):
    records: int
    units: int
    gzip_indexes: list[GzipIndex | None]  # one per input; None for a plain one


class PlanningCancelled(Exception):
    """Raised inside the planning thread when the job was killed meanwhile."""


def unit_size(records: int, workers: int, max_records: int) -> int:
    """Records per unit: enough units to keep every worker busy, none over the cap."""
    return max(1, min(max_records, math.ceil(records / (workers * UNITS_PER_WORKER))))


async def plan_job(
    progress: ProgressLog,
    job: JobRow,
    *,
    workers: int,
    max_records: int,
    cancel: threading.Event,
    index_dir: Path | None = None,
) -> PlanTotals:
    """Validate the input and record its units; returns the records and units in all,
    and the seek-point index saved in `index_dir` for each gzip input (none without).

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

    def plan() -> PlanTotals:
        counts = [scan.records for scan in scan_inputs(job.inputs)]
        size = fixed_size or unit_size(sum(counts), workers, max_records)
        index_paths = _index_paths(job.inputs, index_dir)
        batch: list[UnitPlan] = []
        units = 0
        for unit in plan_units(job.inputs, counts, size, index_paths):
            batch.append(unit)
            units += 1
            if len(batch) >= BATCH:
                add(batch)
                batch = []
        if batch:
            add(batch)
        indexes = [None if i is None else gzip_index.describe(i) for i in index_paths]
        return PlanTotals(sum(counts), units, indexes)

    totals = await asyncio.to_thread(plan)
    check_unchanged(job.inputs, recorded)  # not rewritten while it was being read
    return totals


def _index_paths(inputs: Sequence[str], index_dir: Path | None) -> list[Path | None]:
    """Where each gzip input's index goes (None: a plain input, or no `index_dir`)."""
    if index_dir is None:
        return [None] * len(inputs)
    index_dir.mkdir(parents=True, exist_ok=True)
    return [
        index_dir / f"input-{i}.gzidx" if gzip_index.is_gzip(path) else None
        for i, path in enumerate(inputs)
    ]


def plan_units(
    paths: Sequence[str],
    counts: Sequence[int],
    size: int,
    index_paths: Sequence[Path | None] | None = None,
) -> Iterator[UnitPlan]:
    """The job's units in input order: each file cut into units of `size` records
    (`counts`: each file's records, from the scan), numbered and indexed across files;
    a gzip input with a path in `index_paths` is indexed there as it is read."""
    unit_id = base = 0  # the next unit's id; the first record index of the current file
    index_paths = index_paths or [None] * len(paths)
    for input_index, (path, count) in enumerate(zip(paths, counts, strict=True)):
        for first, start, end, digest in unit_spans(path, size, index_paths[input_index]):
            records = min(size, count - first)
            yield UnitPlan(unit_id, start, base + first, records, end, digest, input_index)
            unit_id += 1
        base += count


def unit_spans(
    path: str | os.PathLike[str], size: int, index_to: Path | None = None
) -> Iterator[tuple[int, int, int, str]]:
    """(first record, start offset, end offset, digest) of each unit of `size` records
    of one file, FASTA or FASTQ; a unit's bytes run to the next unit's start, or to
    the end. A gzip file is indexed into `index_to` (if given) once read to its end."""
    if detect_format(path) == "fastq":
        return _line_spans(path, size, HeaderLines().is_header, index_to)
    return _fasta_spans(path, size, index_to)


def _reading(
    path: str | os.PathLike[str], index_to: Path | None
) -> AbstractContextManager[BinaryIO]:
    """The file's bytes from its start; a gzip one indexed into `index_to` as it goes."""
    if index_to is None:
        return open_binary(path)
    return gzip_index.building(path, index_to)


def _fasta_spans(
    path: str | os.PathLike[str], size: int, index_to: Path | None
) -> Iterator[tuple[int, int, int, str]]:
    """`unit_spans` of a FASTA file, in one pass of large reads. A record starts at a
    '>' that begins a line (as for `record_starts`)."""
    digest = new_digest()
    index = first = offset = 0  # records seen; the unit's first; the chunk's offset
    start = -1  # the current unit's start offset; -1 before the first record
    line_start = True  # the next chunk begins a line
    with _reading(path, index_to) as raw:
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
    path: str | os.PathLike[str],
    size: int,
    is_header: Callable[[bytes], bool],
    index_to: Path | None,
) -> Iterator[tuple[int, int, int, str]]:
    """`unit_spans` line by line, for a format where only the line layout tells a
    header (FASTQ: a quality line may begin with '@')."""
    digest = new_digest()
    index = first = offset = 0
    start = -1  # the current unit's start offset; -1 before the first record
    with _reading(path, index_to) as raw:
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
