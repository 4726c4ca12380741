"""The planner, in process: units tile the validated input exactly once, each starting
at its record's header; sizes follow `unit_size`; broken input fails naming its line;
a cancel stops planning; an interrupted plan replays with the size it started with."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from virnuc.daemon.jobs import planner
from virnuc.daemon.jobs.input_check import InputChanged, fingerprint_if_readable
from virnuc.daemon.jobs.planner import PlanningCancelled, plan_job
from virnuc.daemon.progress.log import (
    ConflictError,
    JobRow,
    NewJob,
    ProgressLog,
    UnitPlan,
    UnitRow,
)
from virnuc.pipeline import input_pass, inputs
from virnuc.pipeline.fasta import FastaError, read_records, record_starts
from virnuc.pipeline.spec import ModelSpec

SPEC = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300, "demo")
BASES = "ACGTTGCAAC"


@pytest_asyncio.fixture
async def log(tmp_path: Path) -> AsyncIterator[ProgressLog]:
    async with await ProgressLog.open(tmp_path / "state.db") as opened:
        yield opened


def fasta_bytes(records: int, *, newline: str = "\n") -> bytes:
    """`records` records of varied length, wrapped at 60 columns, with descriptions
    and blank lines, so header offsets are irregular."""
    lines: list[str] = []
    for i in range(records):
        lines.append(f">rec{i} sample {i} len={7 + 31 * i}")
        sequence = (BASES * 40)[: 7 + 31 * i]
        lines.extend(sequence[j : j + 60] for j in range(0, len(sequence), 60))
        if i % 4 == 3:
            lines.append("")
    return "".join(line + newline for line in lines).encode("ascii")


async def new_job(log: ProgressLog, path: Path, job_id: str = "j1") -> JobRow:
    return await log.create_job(NewJob(job_id, str(path), f"/out/{job_id}", SPEC, 2))


async def units_of(log: ProgressLog, job_id: str = "j1") -> list[UnitRow]:
    return await log.pending_units(job_id, limit=1_000_000)


async def plan(
    log: ProgressLog,
    job: JobRow,
    *,
    workers: int,
    max_records: int,
    cancel: threading.Event | None = None,
) -> int:
    """Plan as the scheduler has it done: record the input's fingerprint first, plan,
    then close the plan with the totals the planner returns; returns the units."""
    cancel = cancel or threading.Event()
    if (taken := fingerprint_if_readable(job.inputs)) is not None:
        job = await log.fingerprint_input(job.job_id, taken)
    totals = await plan_job(log, job, workers=workers, max_records=max_records, cancel=cancel)
    await log.finish_planning(job.job_id, totals.records, totals.units)
    return totals.units


def spy_on_batches(
    log: ProgressLog, monkeypatch: pytest.MonkeyPatch, after: Callable[[int], None]
) -> list[list[UnitPlan]]:
    """Record each batch the planner hands to `log.add_units`; `after(n)` runs once the
    n-th batch (1-based) is written."""
    batches: list[list[UnitPlan]] = []
    real: Callable[[str, list[UnitPlan]], Awaitable[None]] = log.add_units

    async def add_units(job_id: str, units: list[UnitPlan]) -> None:
        batches.append(list(units))
        await real(job_id, units)
        after(len(batches))

    monkeypatch.setattr(log, "add_units", add_units)
    return batches


# --- tiling and offsets --------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
async def test_units_tile_the_records_once_and_each_offset_seeks_to_its_first_header(
    log: ProgressLog, tmp_path: Path, newline: str
) -> None:
    data = fasta_bytes(23, newline=newline)
    path = tmp_path / "in.fa"
    path.write_bytes(data)
    job = await new_job(log, path)

    # 23 records over 2 workers x 4 units each: ceil(23 / 8) = 3 records per unit.
    assert await plan(log, job, workers=2, max_records=5) == 8
    units = await units_of(log)

    assert [u.unit_id for u in units] == list(range(8))
    assert [u.record_count for u in units] == [3] * 7 + [2]
    covered = [r for u in units for r in range(u.first_record, u.end_record)]
    assert covered == list(range(23))  # contiguous, no gap, no overlap, nothing past the end
    for unit in units:
        header = f">rec{unit.first_record} ".encode()
        assert data[unit.start_offset :].startswith(header), unit
        got = read_records(
            path, offset=unit.start_offset, first_index=unit.first_record, count=unit.record_count
        )
        assert [(r.index, r.id) for r in got] == [
            (i, f"rec{i}") for i in range(unit.first_record, unit.end_record)
        ]


@pytest.mark.asyncio
async def test_totals_are_recorded_on_the_job_when_planning_ends(
    log: ProgressLog, tmp_path: Path
) -> None:
    path = tmp_path / "in.fa"
    path.write_bytes(fasta_bytes(11))
    job = await new_job(log, path)
    assert (job.records_total, job.units_total) == (None, None)

    units = await plan(log, job, workers=1, max_records=2)

    planned = await log.get_job("j1")
    assert planned is not None
    assert (planned.records_total, planned.units_total) == (11, units) == (11, 6)
    assert planned.state == "queued"  # the planner records units, never the job's state


@pytest.mark.asyncio
async def test_the_planner_returns_its_totals_and_leaves_the_job_row_to_the_scheduler(
    log: ProgressLog, tmp_path: Path
) -> None:
    path = tmp_path / "in.fa"
    path.write_bytes(fasta_bytes(11))
    job = await new_job(log, path)

    totals = await plan_job(log, job, workers=1, max_records=2, cancel=threading.Event())

    assert totals == (11, 6, [None])
    assert len(await units_of(log)) == 6
    assert await log.get_job("j1") == job  # no totals, no fingerprint: not its row


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("records", "workers", "max_records", "counts"),
    [
        pytest.param(100, 1, 10, [10] * 10, id="capped-by-max-records"),
        pytest.param(10, 2, 100, [2] * 5, id="spread-over-2-workers-x4"),
        pytest.param(10, 1, 100, [3, 3, 3, 1], id="last-unit-takes-the-rest"),
        pytest.param(3, 4, 100, [1, 1, 1], id="never-below-one-record"),
        pytest.param(1, 1, 100, [1], id="one-record"),
        pytest.param(7, 1, 1, [1] * 7, id="max-records-1"),
    ],
)
async def test_unit_sizes_are_bounded_by_max_records_and_spread_over_workers(
    log: ProgressLog,
    tmp_path: Path,
    records: int,
    workers: int,
    max_records: int,
    counts: list[int],
) -> None:
    path = tmp_path / "in.fa"
    path.write_bytes(fasta_bytes(records))
    job = await new_job(log, path)

    assert await plan(log, job, workers=workers, max_records=max_records) == len(counts)

    units = await units_of(log)
    assert [u.record_count for u in units] == counts
    assert [u.first_record for u in units] == [sum(counts[:i]) for i in range(len(counts))]
    assert planner.unit_size(records, workers, max_records) == counts[0]


@pytest.mark.asyncio
async def test_gzip_input_plans_the_same_units_with_offsets_in_the_decompressed_stream(
    log: ProgressLog, tmp_path: Path
) -> None:
    data = fasta_bytes(9)
    plain, packed = tmp_path / "in.fa", tmp_path / "in.fa.gz"
    plain.write_bytes(data)
    packed.write_bytes(gzip.compress(data))

    await plan(log, await new_job(log, plain, "plain"), workers=1, max_records=2)
    await plan(log, await new_job(log, packed, "packed"), workers=1, max_records=2)

    def layout(units: list[UnitRow]) -> list[tuple[int, int, int, int]]:
        return [(u.unit_id, u.start_offset, u.first_record, u.record_count) for u in units]

    gz_units = await units_of(log, "packed")
    assert layout(gz_units) == layout(await units_of(log, "plain"))
    assert len(gz_units) == 5
    last = gz_units[-1]
    assert [r.id for r in read_records(packed, offset=last.start_offset, count=5)] == ["rec8"]
    job = await log.get_job("packed")
    assert job is not None
    assert (job.records_total, job.units_total) == (9, 5)


@pytest.mark.asyncio
async def test_units_reach_the_log_in_batches_of_at_most_batch_units(
    log: ProgressLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planner, "BATCH", 3)
    batches = spy_on_batches(log, monkeypatch, after=lambda n: None)
    path = tmp_path / "in.fa"
    path.write_bytes(fasta_bytes(10))

    assert await plan(log, await new_job(log, path), workers=3, max_records=1) == 10

    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [u.unit_id for b in batches for u in b] == list(range(10))
    assert len(await units_of(log)) == 10


# --- invalid input -------------------------------------------------------------------


BAD_INPUTS = [
    pytest.param(b"ACGT\n>a\nACGT\n", 1, "text before the first '>' header", id="no-header"),
    pytest.param(b"@r1\nACGT\n+\nIII\n", 4, "quality line of read 'r1' has 3", id="fastq-qual"),
    pytest.param(b"@r1\nACGT\nIIII\n", 3, "missing '\\+' line", id="fastq-no-plus"),
    pytest.param(b"@r1\nAC\n+\nII\n@r2\nACGT\n+\n", 5, "truncated record", id="fastq-cut"),
    pytest.param(b"@r1\nAC\n+\nII\n@r1\nAC\n+\nII\n", 5, "duplicate record id", id="fastq-dup"),
    pytest.param(b">a\nACGT\n>\nACGT\n", 3, "empty FASTA header", id="empty-header"),
    pytest.param(b">a\nACGT\n>b\n>c\nACGT\n", 3, "record 'b' has no sequence", id="no-sequence"),
    pytest.param(b">a\nACGT\n>p\nMKVLEF\n", 4, "not nucleotides", id="protein"),
    pytest.param(b">a\nAC\n>b\nAC\n>a x\nAC\n", 5, "duplicate record id 'a'", id="duplicate-id"),
    pytest.param(b">a\nAC\x00\x01GT\n", 2, "non-text bytes", id="binary"),
    pytest.param(b"", None, "no FASTA records", id="empty-file"),
    pytest.param(b"\n\n", None, "no FASTA records", id="blank-lines-only"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("content", "line", "reason"), BAD_INPUTS)
async def test_invalid_input_raises_naming_line_and_reason_and_plans_nothing(
    log: ProgressLog, tmp_path: Path, content: bytes, line: int | None, reason: str
) -> None:
    path = tmp_path / "in.fa"
    path.write_bytes(content)
    job = await new_job(log, path)

    with pytest.raises(FastaError, match=reason) as raised:
        await plan(log, job, workers=2, max_records=10)

    assert raised.value.line == line
    if line is not None:
        assert f"line {line}:" in str(raised.value)
    assert str(path) in str(raised.value)
    assert await units_of(log) == []
    after = await log.get_job("j1")
    assert after is not None
    assert (after.records_total, after.units_total) == (None, None)


@pytest.mark.asyncio
async def test_a_truncated_gzip_input_raises_before_any_unit_is_recorded(
    log: ProgressLog, tmp_path: Path
) -> None:
    path = tmp_path / "in.fa.gz"
    path.write_bytes(gzip.compress(fasta_bytes(200))[:-40])
    job = await new_job(log, path)

    with pytest.raises(FastaError, match="ends early or is damaged"):
        await plan(log, job, workers=1, max_records=5)

    assert await units_of(log) == []


@pytest.mark.asyncio
async def test_a_missing_input_file_raises_naming_it(log: ProgressLog, tmp_path: Path) -> None:
    job = await new_job(log, tmp_path / "gone.fa")
    with pytest.raises(FastaError, match="no such file"):
        await plan(log, job, workers=1, max_records=5)
    assert await units_of(log) == []


# --- cancel, replay and refusals -----------------------------------------------------


@pytest.mark.asyncio
async def test_cancel_before_planning_raises_planning_cancelled_and_records_nothing(
    log: ProgressLog, tmp_path: Path
) -> None:
    path = tmp_path / "in.fa"
    path.write_bytes(fasta_bytes(5))
    job = await new_job(log, path)
    cancel = threading.Event()
    cancel.set()

    with pytest.raises(PlanningCancelled):
        await plan(log, job, workers=1, max_records=1, cancel=cancel)

    assert await units_of(log) == []
    after = await log.get_job("j1")
    assert after is not None
    assert after.records_total is None


@pytest.mark.asyncio
async def test_cancel_mid_plan_stops_at_the_next_batch_and_leaves_planning_open(
    log: ProgressLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planner, "BATCH", 2)
    cancel = threading.Event()
    batches = spy_on_batches(log, monkeypatch, after=lambda n: cancel.set())
    path = tmp_path / "in.fa"
    path.write_bytes(fasta_bytes(10))
    job = await new_job(log, path)

    with pytest.raises(PlanningCancelled):
        await plan(log, job, workers=3, max_records=1, cancel=cancel)

    assert len(batches) == 1  # nothing handed over once the cancel was seen
    assert [u.unit_id for u in await units_of(log)] == [0, 1]
    after = await log.get_job("j1")
    assert after is not None
    assert (after.records_total, after.units_total) == (None, None)


@pytest.mark.asyncio
async def test_an_interrupted_plan_replays_with_its_original_unit_size(
    log: ProgressLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon died mid-plan and came back with more workers: the plan it replays
    keeps the unit size it started with, so the stored units are accepted as-is."""
    monkeypatch.setattr(planner, "BATCH", 2)
    path = tmp_path / "in.fa"
    path.write_bytes(fasta_bytes(12))
    job = await new_job(log, path)
    first_try = threading.Event()
    spy_on_batches(log, monkeypatch, after=lambda n: first_try.set())
    with pytest.raises(PlanningCancelled):  # 1 worker: ceil(12 / 4) = 3 records a unit
        await plan(log, job, workers=1, max_records=100, cancel=first_try)
    assert [u.record_count for u in await units_of(log)] == [3, 3]
    monkeypatch.undo()  # the real add_units and BATCH again

    # 3 workers would now mean 1 record a unit; the replay keeps 3.
    assert await plan(log, job, workers=3, max_records=100) == 4

    units = await units_of(log)
    assert [(u.first_record, u.record_count) for u in units] == [(0, 3), (3, 3), (6, 3), (9, 3)]
    after = await log.get_job("j1")
    assert after is not None
    assert (after.records_total, after.units_total) == (12, 4)


@pytest.mark.asyncio
async def test_an_input_changed_since_an_interrupted_plan_fails_saying_so(
    log: ProgressLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planner, "BATCH", 2)
    path = tmp_path / "in.fa"
    path.write_bytes(fasta_bytes(8))
    job = await new_job(log, path)
    cancel = threading.Event()
    spy_on_batches(log, monkeypatch, after=lambda n: cancel.set())
    with pytest.raises(PlanningCancelled):
        await plan(log, job, workers=1, max_records=1, cancel=cancel)
    monkeypatch.undo()
    path.write_bytes(b">new description\nACGT\n" + fasta_bytes(7))  # record 1 moved

    with pytest.raises(InputChanged, match=r"input changed since submission: .* size went"):
        await plan(log, job, workers=1, max_records=1)

    after = await log.get_job("j1")
    assert after is not None
    assert after.records_total is None


@pytest.mark.asyncio
async def test_planning_a_job_whose_plan_is_closed_fails_with_the_logs_refusal(
    log: ProgressLog, tmp_path: Path
) -> None:
    path = tmp_path / "in.fa"
    path.write_bytes(fasta_bytes(4))
    job = await new_job(log, path)
    await plan(log, job, workers=1, max_records=2)

    with pytest.raises(ConflictError, match="planning has finished"):
        await plan(log, job, workers=1, max_records=2)


# --- unit digests ----------------------------------------------------------------------


def blake(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@pytest.mark.asyncio
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
async def test_each_unit_stores_where_its_bytes_end_and_their_digest(
    log: ProgressLog, tmp_path: Path, newline: str, gz: bool
) -> None:
    data = b"\n\n" + fasta_bytes(23, newline=newline)  # blank lines before the first header
    path = tmp_path / ("in.fa.gz" if gz else "in.fa")
    path.write_bytes(gzip.compress(data) if gz else data)

    await plan(log, await new_job(log, path), workers=2, max_records=5)

    units = await units_of(log)
    assert units[0].start_offset == 2
    ends = [u.start_offset for u in units[1:]] + [len(data)]
    assert [u.end_offset for u in units] == ends  # the units' bytes tile the records
    assert [u.digest for u in units] == [blake(data[u.start_offset : u.end_offset]) for u in units]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_unit_spans_find_the_record_starts_across_read_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(input_pass, "READ", chunk)
    data = b"\n" + fasta_bytes(13, newline="\r\n")
    path = tmp_path / "in.fa"
    path.write_bytes(data)
    starts = [s.offset for s in record_starts(path)]
    assert len(starts) == 13

    spans = list(planner.unit_spans(path, 3))

    assert [(first, start) for first, start, _, _ in spans] == [
        (i, starts[i]) for i in (0, 3, 6, 9, 12)
    ]
    assert [end for _, _, end, _ in spans] == [*starts[3::3], len(data)]
    assert [digest for _, start, end, digest in spans] == [
        blake(data[start:end]) for _, start, end, _ in spans
    ]


@pytest.mark.asyncio
async def test_a_replayed_plan_accepts_its_stored_digests(
    log: ProgressLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(planner, "BATCH", 2)
    path = tmp_path / "in.fa"
    path.write_bytes(fasta_bytes(8))
    job = await new_job(log, path)
    cancel = threading.Event()
    spy_on_batches(log, monkeypatch, after=lambda n: cancel.set())
    with pytest.raises(PlanningCancelled):
        await plan(log, job, workers=1, max_records=1, cancel=cancel)
    stored = await units_of(log)
    monkeypatch.undo()

    assert await plan(log, job, workers=1, max_records=1) == 8

    units = await units_of(log)
    assert units[:2] == stored
    assert all(u.digest is not None for u in units)


@pytest.mark.asyncio
async def test_a_replayed_plan_of_bytes_rewritten_with_size_and_mtime_kept_fails(
    log: ProgressLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fingerprint cannot see this rewrite; the digests of the stored units can."""
    monkeypatch.setattr(planner, "BATCH", 2)
    path = tmp_path / "in.fa"
    path.write_bytes(fasta_bytes(8))
    planned = os.stat(path)
    job = await new_job(log, path)
    cancel = threading.Event()
    spy_on_batches(log, monkeypatch, after=lambda n: cancel.set())
    with pytest.raises(PlanningCancelled):
        await plan(log, job, workers=1, max_records=1, cancel=cancel)
    monkeypatch.undo()
    path.write_bytes(fasta_bytes(8).replace(b"ACGT", b"TGCA"))  # same size, same headers
    os.utime(path, ns=(planned.st_atime_ns, planned.st_mtime_ns))

    with pytest.raises(ConflictError, match="input changed since submission: the bytes of unit 0"):
        await plan(log, job, workers=1, max_records=1)

    after = await log.get_job("j1")
    assert after is not None
    assert after.records_total is None


@pytest.mark.asyncio
async def test_units_stored_without_a_digest_keep_none_when_the_plan_is_replayed(
    log: ProgressLog, tmp_path: Path
) -> None:
    """An older virnuc planned units 0-1 and died; the replay accepts them as they are
    (their bytes are then not checked) and digests the units it adds."""
    data = fasta_bytes(8)
    path = tmp_path / "in.fa"
    path.write_bytes(data)
    job = await new_job(log, path)
    starts = [s.offset for s in record_starts(path)]
    await log.add_units("j1", [UnitPlan(0, starts[0], 0, 2), UnitPlan(1, starts[2], 2, 2)])

    assert await plan(log, job, workers=1, max_records=2) == 4

    units = await units_of(log)
    assert [(u.end_offset, u.digest) for u in units[:2]] == [(None, None), (None, None)]
    assert [u.digest for u in units[2:]] == [
        blake(data[starts[4] : starts[6]]),
        blake(data[starts[6] :]),
    ]


# --- several inputs ------------------------------------------------------------------


def fastq_bytes(records: int, prefix: str = "read") -> bytes:
    """4-line FASTQ records whose quality lines begin with '@' (legal, and not headers)."""
    out = []
    for i in range(records):
        sequence = (BASES * 10)[: 5 + 7 * i]
        out.append(f"@{prefix}{i} lane=1\n{sequence}\n+\n@{'I' * (len(sequence) - 1)}\n")
    return "".join(out).encode("ascii")


async def new_multi_job(log: ProgressLog, paths: list[Path], job_id: str = "j1") -> JobRow:
    inputs = tuple(str(p) for p in paths)
    job = NewJob(job_id, inputs[0], f"/out/{job_id}", SPEC, 2, inputs=inputs)
    return await log.create_job(job)


@pytest.mark.asyncio
async def test_units_of_several_inputs_never_span_a_file_and_index_records_across_them(
    log: ProgressLog, tmp_path: Path
) -> None:
    first, second, third = tmp_path / "a.fa", tmp_path / "b.fq", tmp_path / "c.fq.gz"
    first.write_bytes(fasta_bytes(5))
    second.write_bytes(fastq_bytes(4))
    third.write_bytes(gzip.compress(fastq_bytes(3, prefix="gz")))
    job = await new_multi_job(log, [first, second, third])
    assert job.inputs == (str(first), str(second), str(third))

    # 12 records over 1 worker x 4 units: 3 records per unit, cut within each file.
    assert await plan(log, job, workers=1, max_records=100) == 5
    units = await units_of(log)

    layout = [(u.input_index, u.first_record, u.record_count) for u in units]
    assert layout == [(0, 0, 3), (0, 3, 2), (1, 5, 3), (1, 8, 1), (2, 9, 3)]
    paths = [first, second, third]
    for unit in units:
        got = inputs.read_records(
            paths[unit.input_index],
            offset=unit.start_offset,
            first_index=unit.first_record,
            count=unit.record_count,
        )
        assert [r.index for r in got] == list(range(unit.first_record, unit.end_record))
    planned = await log.get_job("j1")
    assert planned is not None
    assert (planned.records_total, planned.units_total) == (12, 5)
    assert planned.input_fingerprint is not None
    assert len(planned.input_fingerprint.split(";")) == 3  # one per file


@pytest.mark.asyncio
async def test_a_change_to_any_input_since_planning_fails_the_replayed_plan(
    log: ProgressLog, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.fa", tmp_path / "b.fq"
    first.write_bytes(fasta_bytes(3))
    second.write_bytes(fastq_bytes(3))
    job = await new_multi_job(log, [first, second])
    await plan(log, job, workers=1, max_records=100)
    planned = await log.get_job("j1")
    assert planned is not None

    second.write_bytes(fastq_bytes(4))  # only the second file changes

    with pytest.raises(InputChanged, match=f"{second}: its size went from"):
        await plan(log, planned, workers=1, max_records=100)


@pytest.mark.asyncio
async def test_an_id_repeated_across_inputs_fails_planning_naming_both_files(
    log: ProgressLog, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.fa", tmp_path / "b.fq"
    first.write_bytes(fasta_bytes(3))
    second.write_bytes(fastq_bytes(2, prefix="rec"))  # rec0, rec1 again
    job = await new_multi_job(log, [first, second])

    with pytest.raises(FastaError, match=rf"\(first in {first}, line 1\)") as raised:
        await plan(log, job, workers=1, max_records=100)

    assert raised.value.path == str(second)
    assert raised.value.line == 1
    assert await units_of(log) == []


@pytest.mark.asyncio
async def test_a_gzip_input_is_indexed_into_the_job_dir_and_recorded_with_the_plan(
    log: ProgressLog, tmp_path: Path
) -> None:
    packed = tmp_path / "in.fa.gz"
    packed.write_bytes(gzip.compress(fasta_bytes(9)))
    plain = tmp_path / "in.fa"
    plain.write_bytes(fasta_bytes(5).replace(b">rec", b">other"))
    job = await log.create_job(
        NewJob("j1", str(packed), "/out/j1", SPEC, 2, inputs=(str(packed), str(plain)))
    )
    job_dir = tmp_path / "jobs" / "j1"

    totals = await plan_job(
        log, job, workers=1, max_records=2, cancel=threading.Event(), index_dir=job_dir
    )
    row = await log.finish_planning("j1", totals.records, totals.units, totals.gzip_indexes)

    index, none = totals.gzip_indexes
    assert none is None  # a plain input has none
    assert index is not None
    assert Path(index.path) == job_dir / "input-0.gzidx"
    saved = await asyncio.to_thread(Path(index.path).read_bytes)
    assert (index.size, index.sha256) == (len(saved), hashlib.sha256(saved).hexdigest())
    assert row.gzip_indexes == (index, None)
    assert (await log.get_job("j1")).gzip_indexes == (index, None)


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each read of an input the planner starts."""
    opened: list[str] = []

    def counted(path: str, index_to: Path | None = None) -> input_pass.InputPass:
        opened.append(path)
        return inputs.input_pass(path, index_to)

    monkeypatch.setattr(planner, "input_pass", counted)
    return opened


@pytest.mark.asyncio
async def test_a_job_past_the_settling_size_reads_each_input_once(
    log: ProgressLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = count_reads(monkeypatch)
    path = tmp_path / "in.fa"
    path.write_bytes(fasta_bytes(40))  # 1 worker x 4 units x (5 - 1) = 16 records settle it

    assert await plan(log, await new_job(log, path), workers=1, max_records=5) == 8

    assert opened == [str(path)]
    assert [u.record_count for u in await units_of(log)] == [5] * 8


@pytest.mark.asyncio
async def test_a_job_smaller_than_that_is_read_again_and_cut_at_its_own_size(
    log: ProgressLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = count_reads(monkeypatch)
    path = tmp_path / "in.fa"
    path.write_bytes(fasta_bytes(12))  # ceil(12 / (2 workers x 4)) = 2 records a unit

    assert await plan(log, await new_job(log, path), workers=2, max_records=100) == 6

    assert opened == [str(path), str(path)]
    units = await units_of(log)
    assert [(u.first_record, u.record_count) for u in units] == [(i, 2) for i in range(0, 12, 2)]
