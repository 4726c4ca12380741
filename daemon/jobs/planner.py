"""Plan a job's inputs into work units: contiguous ranges of records.

One read of each input (FASTA or FASTQ, plain or gzip), in a thread: the input's pass
(pipeline/input_pass.py) validates every record (so a broken one fails the job before
any model time is spent, naming its file and line), hashes its id and, for a gzip
input, checks the stream and saves its seek-point index into the job's directory;
from the same blocks of bytes the units are cut, of equal record counts, and each
unit's bytes digested (virnuc.input_digest: the worker that reads the unit checks
them). Units go to the progress log in batches, waiting for each batch to be written
(backpressure: a 10-million-record file never sits in memory). After the last input,
ids are checked unique across the job (pipeline/record_ids.py); the scheduler hands
out no unit before the plan is closed.

The unit size depends on the job's record count (`unit_size`), known only at the end;
but past `workers * UNITS_PER_WORKER * (max_records - 1)` records it is `max_records`
whatever comes after. So units are cut at `max_records` and held until that many
records were read; a job that ends smaller (a few hundred thousand records at most)
is read a second time, cut at its own size.

A unit never spans two files: each file is cut on its own (its last unit may be
short) and each unit records which input it reads (`input_index`). Record indices
run across the whole job, byte offsets are within the unit's file, so resuming,
parts and assembly need nothing new at a file boundary.

Re-planning after a daemon crash replays the same pass with the size it started with;
the progress log accepts units it already holds unchanged, so planning is idempotent.

The planner writes units, never the job's row: the scheduler's `JobBook` records the
input's fingerprint before planning starts and closes the plan with the totals
`plan_job` returns (daemon/jobs/book.py).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

from virnuc.input_digest import new_digest
from virnuc.pipeline import gzip_index
from virnuc.pipeline.gzip_index import GzipIndex
from virnuc.pipeline.input_pass import InputPass
from virnuc.pipeline.inputs import input_pass, record_starts
from virnuc.pipeline.record_ids import check_unique_ids

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
        index_paths = _index_paths(job.inputs, index_dir)
        cuts = _Cuts(add, fixed_size or max_records, settled=fixed_size is not None)
        settle_at = workers * UNITS_PER_WORKER * (max_records - 1)
        counts = _read_once(job.inputs, index_paths, cuts, settle_at)
        if not cuts.settled:
            size = unit_size(sum(counts), workers, max_records)
            cuts.settle(keep=size == cuts.size)
            if size != cuts.size:  # a small job: read again, cut at its own size
                cuts.take_all(plan_units(job.inputs, size))
        cuts.flush()
        indexes = [None if i is None else gzip_index.describe(i) for i in index_paths]
        return PlanTotals(sum(counts), cuts.units, indexes)

    totals = await asyncio.to_thread(plan)
    check_unchanged(job.inputs, recorded)  # not rewritten while it was being read
    return totals


def _read_once(
    paths: Sequence[str], index_paths: Sequence[Path | None], cuts: _Cuts, settle_at: int
) -> list[int]:
    """The one validating read of every input, its units handed to `cuts` (settled
    once more than `settle_at` records were read); returns each file's records."""
    passes = [input_pass(path, index_to) for path, index_to in zip(paths, index_paths, strict=True)]
    counts: list[int] = []
    with closing(_units_of(passes, cuts.size, counts)) as units:  # a stop closes the file now
        for unit in units:
            cuts.take(unit)
            if not cuts.settled and unit.first_record + unit.record_count > settle_at:
                cuts.settle(keep=True)
    check_unique_ids([(run.path, run.id_hashes) for run in passes], record_starts)
    return counts


class _Cuts:
    """Units on their way to the progress log: in batches of BATCH once the unit size
    is settled, held until then."""

    def __init__(self, add: Callable[[list[UnitPlan]], None], size: int, *, settled: bool):
        self._add = add
        self.size = size
        self.settled = settled
        self.units = 0
        self._batch: list[UnitPlan] = []

    def take(self, unit: UnitPlan) -> None:
        self._batch.append(unit)
        self.units += 1
        if self.settled and len(self._batch) >= BATCH:
            self.flush()

    def take_all(self, units: Generator[UnitPlan, None, None]) -> None:
        with closing(units):  # a stop (cancelled, a full disk) closes the file now
            for unit in units:
                self.take(unit)

    def settle(self, *, keep: bool) -> None:
        """The size is known: keep the units held (cut at it), or drop them."""
        self.settled = True
        if not keep:
            self._batch, self.units = [], 0

    def flush(self) -> None:
        for start in range(0, len(self._batch), BATCH):
            self._add(self._batch[start : start + BATCH])
        self._batch = []


def _index_paths(inputs: Sequence[str], index_dir: Path | None) -> list[Path | None]:
    """Where each gzip input's index goes (None: a plain input, or no `index_dir`)."""
    if index_dir is None:
        return [None] * len(inputs)
    index_dir.mkdir(parents=True, exist_ok=True)
    return [
        index_dir / f"input-{i}.gzidx" if gzip_index.is_gzip(path) else None
        for i, path in enumerate(inputs)
    ]


def plan_units(paths: Sequence[str], size: int) -> Generator[UnitPlan, None, None]:
    """The job's units in input order: each file read (and validated) again and cut
    into units of `size` records, numbered and indexed across files."""
    return _units_of([input_pass(path) for path in paths], size, [])


def _units_of(
    passes: Sequence[InputPass], size: int, counts: list[int]
) -> Generator[UnitPlan, None, None]:
    """Units of `size` records from each pass in turn; appends each file's record
    count to `counts` once it is read."""
    unit_id = base = 0  # the next unit's id; the first record index of the current file
    for input_index, run in enumerate(passes):
        for first, records, start, end, digest in file_units(run, size):
            yield UnitPlan(unit_id, start, base + first, records, end, digest, input_index)
            unit_id += 1
        assert run.scan is not None  # the pass has been read to its end
        counts.append(run.scan.records)
        base += run.scan.records


def unit_spans(
    path: str | os.PathLike[str], size: int, index_to: Path | None = None
) -> Iterator[tuple[int, int, int, str]]:
    """(first record, start offset, end offset, digest) of each unit of `size` records
    of one file; a gzip file is indexed into `index_to` (if given)."""
    for first, _, start, end, digest in file_units(input_pass(path, index_to), size):
        yield first, start, end, digest


def file_units(run: InputPass, size: int) -> Iterator[tuple[int, int, int, int, str]]:
    """(first record, records, start offset, end offset, digest) of each unit of `size`
    records of one file, from its pass's blocks; a unit's bytes run to the next unit's
    start, or to the end of the data."""
    digest = new_digest()
    first = start = -1  # the current unit's first record and start; -1 before the first
    end = 0
    for block in run:
        taken = 0  # the block's bytes up to here are digested into the current unit
        for i in range((-block.first_record) % size, len(block.starts), size):
            at = int(block.starts[i]) - block.offset
            if start >= 0:
                digest.update(block.data[taken:at])
                yield first, size, start, block.offset + at, digest.hexdigest()
            digest, first, start, taken = (
                new_digest(),
                block.first_record + i,
                block.offset + at,
                at,
            )
        if start >= 0:
            digest.update(block.data[taken:])
        end = block.offset + len(block.data)
    if start >= 0:
        assert run.scan is not None  # the pass has been read to its end
        yield first, run.scan.records - first, start, end, digest.hexdigest()
