"""The scheduler in-process: real asyncio, real SQLite, real planner and assembler.

Its supervisors are fakes at their boundary (`idle`, `models`, `assign`, `release`),
and the test plays each worker: it writes real parts, records them as a supervisor
would, and tells the scheduler what happened. No process is spawned, so a logic bug
here fails in a second, not in a subprocess end-to-end test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import structlog

from virnuc.daemon import scheduler_messages as sm
from virnuc.daemon.config import DaemonConfig
from virnuc.daemon.jobs.input_check import fingerprint as input_fingerprint
from virnuc.daemon.jobs.scheduler import JobFinished, Scheduler
from virnuc.daemon.jobs.submission import SubmitRefused
from virnuc.daemon.progress.log import JobRow, NewJob, ProgressLog
from virnuc.daemon.scheduler_messages import Assignment
from virnuc.faults import Faults
from virnuc.parts import write_part
from virnuc.pipeline.fasta import record_starts
from virnuc.pipeline.outputs import RecordResult
from virnuc.pipeline.spec import ModelSpec
from virnuc.protocol import (
    Assign,
    BatchDone,
    Cancel,
    Checkpoint,
    ErrorCode,
    JobState,
    UnitDone,
    WorkerError,
)

from tests.support.disks import cap_pages
from tests.support.poll import until

SPEC = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300)
OTHER_SPEC = dataclasses.replace(SPEC, classifier="/m/other.pth")
RECORDS = 10  # one worker: units of 3 records -> [0, 3) [3, 6) [6, 9) [9, 10)
DEADLINE = 10.0

pytestmark = pytest.mark.asyncio


class FakeSupervisor:
    """What the scheduler asks of a worker's supervisor; `sent` holds what it sent."""

    def __init__(self, worker_id: str, models: ModelSpec | None = None, up: bool = True):
        self.worker_id = worker_id
        self.models = models
        self.up = up
        self.reachable = True
        self.assignment: Assignment | None = None
        self.sent: asyncio.Queue[Assign | Cancel] = asyncio.Queue()

    @property
    def idle(self) -> bool:
        return self.up and self.assignment is None

    async def assign(self, assignment: Assignment, message: Assign) -> bool:
        if not self.reachable:
            return False
        self.assignment = assignment
        await self.sent.put(message)
        return True

    async def release(self, assignment: Assignment, *, cancel: bool = False) -> None:
        if self.assignment == assignment:
            self.assignment = None
            if cancel:
                await self.sent.put(Cancel(job_id=assignment.job_id))

    def info(self) -> dict[str, Any]:
        return {"id": self.worker_id}

    async def next_message(self) -> Assign | Cancel:
        return await asyncio.wait_for(self.sent.get(), DEADLINE)


class FakeEvents:
    def __init__(self) -> None:
        self.frames: list[list[bytes]] = []

    def publish(self, frames: list[bytes]) -> None:
        self.frames.append(frames)


@dataclasses.dataclass
class Setup:
    config: DaemonConfig
    progress: ProgressLog
    scheduler: Scheduler
    input: Path
    offsets: list[int]  # byte offset of each record, then the file size
    tmp: Path


def write_input(path: Path, records: int = RECORDS) -> list[int]:
    path.write_text("".join(f">r{i} sample\n{'ACGT' * 30}\n" for i in range(records)))
    return [start.offset for start in record_starts(path)] + [path.stat().st_size]


async def open_scheduler(
    tmp: Path,
    workers: list[FakeSupervisor],
    trace: Callable[[str], None] | None = None,
    **config: Any,
) -> Setup:
    """`trace` sees every SQL statement of the progress log's writing connection."""
    config.setdefault("max_unit_failures", 2)
    daemon_config = DaemonConfig(state_dir=tmp / "state", **config)
    daemon_config.state_dir.mkdir(exist_ok=True)
    progress = await ProgressLog.open(daemon_config.database, trace=trace)
    scheduler = Scheduler(
        daemon_config,
        progress,
        FakeEvents(),  # type: ignore[arg-type]
        slots=lambda _scheduler: workers,  # type: ignore[arg-type, return-value]
    )
    scheduler.start()
    fasta = tmp / "in.fa"
    offsets = write_input(fasta) if not fasta.exists() else _offsets(fasta)
    return Setup(daemon_config, progress, scheduler, fasta, offsets, tmp)


def _offsets(path: Path) -> list[int]:
    return [start.offset for start in record_starts(path)] + [path.stat().st_size]


async def close(setup: Setup) -> None:
    await setup.scheduler.stop()
    await setup.progress.close()


@pytest_asyncio.fixture
async def one_worker(tmp_path: Path) -> AsyncIterator[tuple[Setup, FakeSupervisor]]:
    worker = FakeSupervisor("w0")
    setup = await open_scheduler(tmp_path, [worker])
    yield setup, worker
    await close(setup)


async def submit(
    setup: Setup,
    output: str = "out",
    spec: ModelSpec = SPEC,
    owner: str | None = None,
    input: Path | None = None,
    fingerprint: str | None = None,
) -> JobRow:
    job = NewJob(
        job_id=f"job-{output}",
        input=str(input or setup.input),
        output=str(setup.tmp / output),
        spec=spec,
        checkpoint_every=2,
        owner=owner,
        input_fingerprint=fingerprint,
    )
    reply: asyncio.Future[JobRow] = asyncio.get_running_loop().create_future()
    await setup.scheduler.tell(sm.SubmitJob(job, reply))
    return await asyncio.wait_for(reply, DEADLINE)


async def record_part(
    setup: Setup, worker: FakeSupervisor, assign: Assign, records: int
) -> Checkpoint:
    """What a worker and its supervisor do for one part of `records` records: write it,
    verify it, and tell the scheduler, which records it."""
    first = assign.start_record
    results = [
        RecordResult(f"r{i}", 120, 1, [f"r{i}_chunk_1F1"], np.array([[0.25, 0.75]], np.float32))
        for i in range(first, first + records)
    ]
    part = write_part(
        Path(assign.parts_dir),
        job_id=assign.job_id,
        unit_id=assign.unit_id,
        first_record=first,
        end_offset=setup.offsets[first + records],
        results=results,
    )
    ack = Checkpoint(
        job_id=assign.job_id,
        unit_id=assign.unit_id,
        first_record=first,
        record_count=records,
        end_offset=setup.offsets[first + records],
        path=str(part.path),
        size=part.size,
        sha256=part.sha256,
        frames=part.frames,
    )
    await setup.scheduler.tell(sm.PartVerified(worker.worker_id, ack))
    return ack


async def compute_unit(setup: Setup, worker: FakeSupervisor, assign: Assign) -> None:
    """A healthy worker: the whole unit in one part, then `unit_done`."""
    await record_part(setup, worker, assign, assign.record_count)
    done = UnitDone(job_id=assign.job_id, unit_id=assign.unit_id)
    await setup.scheduler.tell(sm.UnitFinished(worker.worker_id, done))


OnAssign = Callable[[Assign], Awaitable[bool]]


async def serve(
    setup: Setup, worker: FakeSupervisor, job_id: str, on_assign: OnAssign | None = None
) -> list[Assign]:
    """Play a healthy worker until the job leaves queued/running; `on_assign` may act
    on an assign instead (it returns True when it did). Returns the assigns seen."""
    seen: list[Assign] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while (await job(setup, job_id)).state in (JobState.QUEUED, JobState.RUNNING):
        assert loop.time() < deadline, f"job {job_id} did not get past running"
        try:
            message = await asyncio.wait_for(worker.sent.get(), 0.05)
        except TimeoutError:
            continue
        if isinstance(message, Assign):
            seen.append(message)
            if on_assign is None or not await on_assign(message):
                await compute_unit(setup, worker, message)
    return seen


def died(worker: FakeSupervisor) -> Assignment | None:
    """The worker process died and its slot came back at once: it holds nothing now."""
    lost, worker.assignment = worker.assignment, None
    return lost


async def next_assign(worker: FakeSupervisor) -> Assign:
    message = await worker.next_message()
    assert isinstance(message, Assign), message
    return message


async def settled(setup: Setup) -> None:
    """Wait until the scheduler handled every message told so far (its inbox is FIFO)."""
    with pytest.raises(LookupError):
        await kill(setup, "no-such-job")


async def kill(setup: Setup, job_id: str) -> Any:
    """`virnucctl kill`: the scheduler's answer, or what it raised."""
    reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    await setup.scheduler.tell(sm.KillJob(job_id, reply))
    return await asyncio.wait_for(reply, DEADLINE)


async def job(setup: Setup, job_id: str) -> JobRow:
    row = await setup.progress.get_job(job_id)
    assert row is not None
    return row


async def finished(setup: Setup, job_id: str) -> JobRow:
    async def probe() -> JobRow | None:
        row = await job(setup, job_id)
        return row if row.state in (JobState.DONE, JobState.FAILED, JobState.KILLED) else None

    return await until(probe, f"job {job_id} to finish")


def output_ids(setup: Setup, output: str = "out") -> list[str]:
    lines = (setup.tmp / output / "prediction_results.txt").read_text().splitlines()[1:]
    return [line.split("\t")[0].split("_chunk_")[0] for line in lines]


async def test_a_job_runs_every_unit_on_its_workers_to_done_with_outputs_in_input_order(
    tmp_path: Path,
) -> None:
    workers = [FakeSupervisor("w0"), FakeSupervisor("w1")]
    setup = await open_scheduler(tmp_path, workers)
    try:
        row = await submit(setup)
        assert row.state == JobState.QUEUED
        assigns: list[Assign] = []
        while len(assigns) < 5:  # two workers: 10 records in units of 2
            waits = {asyncio.ensure_future(w.sent.get()): w for w in workers}
            done_waits, _ = await asyncio.wait(
                waits, timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED
            )
            assert done_waits, "no unit was handed out"
            for wait, worker in waits.items():
                if wait in done_waits:
                    assign = wait.result()
                    assert isinstance(assign, Assign), assign
                    assigns.append(assign)
                    await compute_unit(setup, worker, assign)
                else:
                    wait.cancel()
        done = await finished(setup, row.job_id)
        assert done.state == JobState.DONE, done.error
        assert sorted(a.start_record for a in assigns) == [0, 2, 4, 6, 8]
        assert {a.unit_id for a in assigns if a.unit_id % 2} <= {1, 3}
        assert (done.records_done, done.records_total, done.restarts) == (10, 10, 0)
        assert output_ids(setup) == [f"r{i}" for i in range(RECORDS)]
        await settled(setup)  # `done` is recorded first, then the parts are dropped
        assert not setup.config.job_dir(row.job_id).exists()
        assert all(w.idle for w in workers)
    finally:
        await close(setup)


async def test_a_dead_workers_unit_resumes_from_its_last_recorded_part(one_worker) -> None:
    setup, worker = one_worker
    row = await submit(setup)
    first = await next_assign(worker)
    assert (first.unit_id, first.start_record, first.record_count) == (0, 0, 3)
    await record_part(setup, worker, first, 1)
    await setup.scheduler.tell(sm.WorkerDown("w0", "killed", died(worker)))
    assigns = await serve(setup, worker, row.job_id)
    again = next(a for a in assigns if a.unit_id == 0)
    assert (again.start_record, again.record_count) == (1, 2)
    assert again.start_offset == setup.offsets[1]
    done = await finished(setup, row.job_id)
    assert done.state == JobState.DONE, done.error
    assert (done.restarts, done.records_done) == (1, RECORDS)
    assert output_ids(setup) == [f"r{i}" for i in range(RECORDS)]


async def test_a_unit_that_keeps_killing_workers_fails_the_job_naming_its_records(
    one_worker,
) -> None:
    setup, worker = one_worker
    row = await submit(setup)

    async def kill_on_unit_0(assign: Assign) -> bool:
        if assign.unit_id != 0:
            return False
        await setup.scheduler.tell(sm.WorkerDown("w0", "no heartbeat for 31 s", died(worker)))
        return True

    assigns = await serve(setup, worker, row.job_id, kill_on_unit_0)
    assert [a.unit_id for a in assigns].count(0) == 2  # max_unit_failures
    failed = await finished(setup, row.job_id)
    assert failed.state == JobState.FAILED
    assert failed.error is not None
    assert "unit 0 (records 0..2 of the input) killed its worker 2 times" in failed.error
    assert "no heartbeat" in failed.error


async def test_a_worker_that_dies_after_its_last_part_lost_nothing(one_worker) -> None:
    setup, worker = one_worker
    row = await submit(setup)

    async def die_before_unit_done(assign: Assign) -> bool:
        if assign.unit_id != 0:
            return False
        await record_part(setup, worker, assign, assign.record_count)
        await setup.scheduler.tell(sm.WorkerDown("w0", "killed", died(worker)))
        return True

    assigns = await serve(setup, worker, row.job_id, die_before_unit_done)
    assert sorted(a.unit_id for a in assigns) == [0, 1, 2, 3]  # unit 0 went out once
    done = await finished(setup, row.job_id)
    assert (done.state, done.restarts) == (JobState.DONE, 0)


async def test_news_from_a_worker_that_does_not_hold_the_unit_is_ignored(one_worker) -> None:
    setup, worker = one_worker
    row = await submit(setup)
    assign = await next_assign(worker)
    done = UnitDone(job_id=assign.job_id, unit_id=assign.unit_id)
    await setup.scheduler.tell(sm.UnitFinished("w9", done))  # not the holder
    await setup.scheduler.tell(sm.WorkerDown("w9", "killed", None))
    await settled(setup)
    assert worker.assignment is not None  # w0 still holds unit 0
    assert setup.scheduler.book[row.job_id].running[0].worker_id == "w0"
    await compute_unit(setup, worker, assign)
    assigns = await serve(setup, worker, row.job_id)
    assert [a.unit_id for a in assigns] == [1, 2, 3]
    assert (await finished(setup, row.job_id)).state == JobState.DONE


async def test_of_two_submits_into_one_output_directory_only_the_first_is_created(
    one_worker,
) -> None:
    setup, _ = one_worker
    loop = asyncio.get_running_loop()
    replies = [loop.create_future() for _ in range(2)]
    for n, reply in enumerate(replies):
        job_spec = NewJob(f"j{n}", str(setup.input), str(setup.tmp / "same"), SPEC, 2)
        await setup.scheduler.tell(sm.SubmitJob(job_spec, reply))
    first = await asyncio.wait_for(replies[0], DEADLINE)
    with pytest.raises(SubmitRefused) as refused:
        await asyncio.wait_for(replies[1], DEADLINE)
    assert refused.value.code == ErrorCode.CONFLICT
    assert "another unfinished job writes there" in refused.value.message
    assert first.job_id == "j0"
    assert await setup.progress.count_jobs() == 1


async def test_a_scheduler_told_to_stop_accepting_refuses_submits_as_stopping(one_worker) -> None:
    setup, _ = one_worker
    await setup.scheduler.stop_accepting()
    reply: asyncio.Future[JobRow] = asyncio.get_running_loop().create_future()
    job_spec = NewJob("j0", str(setup.input), str(setup.tmp / "out"), SPEC, 2)
    await setup.scheduler.tell(sm.SubmitJob(job_spec, reply))
    with pytest.raises(SubmitRefused) as refused:
        await asyncio.wait_for(reply, DEADLINE)
    assert refused.value.code == ErrorCode.STOPPING
    assert not setup.scheduler.accepting  # what the submit handler looks at
    assert await setup.progress.count_jobs() == 0


async def test_a_worker_stopping_with_the_daemon_gives_its_unit_back_unblamed(one_worker) -> None:
    setup, worker = one_worker
    row = await submit(setup)
    await next_assign(worker)
    await setup.scheduler.stop_accepting()
    await setup.scheduler.tell(sm.WorkerDown("w0", "stopped", died(worker)))
    await settled(setup)
    stopped = await job(setup, row.job_id)
    assert (stopped.state, stopped.restarts) == (JobState.RUNNING, 0)
    pending = await setup.progress.pending_units(row.job_id, 10)
    assert 0 in [unit.unit_id for unit in pending]  # resumed by the next virnucd
    assert worker.sent.empty()  # nothing handed out while stopping


async def test_kill_cancels_the_unit_at_its_worker_and_removes_the_jobs_parts(one_worker) -> None:
    setup, worker = one_worker
    row = await submit(setup)
    assign = await next_assign(worker)
    await record_part(setup, worker, assign, 1)
    assert await kill(setup, row.job_id) == {"job_id": row.job_id, "state": "killed"}
    cancel = await worker.next_message()
    assert cancel == Cancel(job_id=row.job_id)
    assert worker.idle
    assert (await job(setup, row.job_id)).state == JobState.KILLED
    assert not setup.config.job_dir(row.job_id).exists()
    assert not (setup.tmp / "out" / "prediction_results.txt").exists()


async def test_the_scheduler_records_the_planners_totals_and_keeps_the_row_it_wrote(
    one_worker,
) -> None:
    setup, _ = one_worker
    row = await submit(setup)
    await until(lambda: setup.scheduler.book[row.job_id].planned, "planning")
    in_memory = setup.scheduler.book[row.job_id].row
    assert (in_memory.records_total, in_memory.units_total) == (RECORDS, 4)
    assert in_memory.input_fingerprint is not None  # taken before planning began

    async def memory_is_what_sqlite_holds() -> bool:
        # The job goes on meanwhile (a unit is handed out, so it becomes `running`);
        # between two of the scheduler's writes its copy equals the committed row.
        return setup.scheduler.book[row.job_id].row == await job(setup, row.job_id)

    await until(memory_is_what_sqlite_holds, "the scheduler's row to equal SQLite's")


async def test_a_part_and_its_units_failures_are_recorded_in_one_transaction(
    tmp_path: Path,
) -> None:
    """Unit 0 kills its worker, then records a part and kills the next: with two
    deaths allowed the job still finishes, as that part cleared the first death, in
    the one transaction that recorded it."""
    statements: list[str] = []
    worker = FakeSupervisor("w0")
    setup = await open_scheduler(tmp_path, [worker], trace=statements.append)
    transactions: list[list[str]] = []
    tries = 0

    async def part_between_deaths(assign: Assign) -> bool:
        nonlocal tries
        if assign.unit_id != 0 or tries == 2:
            return False
        tries += 1
        if tries == 2:
            await settled(setup)
            statements.clear()
            await record_part(setup, worker, assign, 1)
            await settled(setup)
            transactions.append([s for s in statements if s.startswith("BEGIN")])
        await setup.scheduler.tell(sm.WorkerDown("w0", "killed", died(worker)))
        return True

    try:
        row = await submit(setup)
        await serve(setup, worker, row.job_id, part_between_deaths)
        assert transactions == [["BEGIN IMMEDIATE"]]
        done = await finished(setup, row.job_id)
        assert (done.state, done.restarts) == (JobState.DONE, 2)
    finally:
        await close(setup)


async def test_a_retried_ack_is_accepted_and_counted_once(one_worker) -> None:
    setup, worker = one_worker
    row = await submit(setup)
    assign = await next_assign(worker)
    ack = await record_part(setup, worker, assign, 1)
    await setup.scheduler.tell(sm.PartVerified("w0", ack))  # the same ack again
    await settled(setup)
    assert worker.assignment is not None  # not refused: the unit stays with its worker
    recorded = await job(setup, row.job_id)
    assert (recorded.records_done, recorded.frames_done) == (1, 1)
    assert setup.scheduler.book[row.job_id].row == recorded
    status = setup.scheduler.book.status_of(recorded)
    assert status["records_done"] == 1
    assert len(await setup.progress.parts_of_unit(row.job_id, 0)) == 1


async def test_parts_told_before_a_unit_done_are_recorded_before_it_is_looked_at(
    one_worker,
) -> None:
    setup, worker = one_worker
    row = await submit(setup)
    assign = await next_assign(worker)
    await record_part(setup, worker, assign, 1)
    second = dataclasses.replace(assign, start_record=1, record_count=2)
    await record_part(setup, worker, second, 2)  # told back to back, no wait between
    done = UnitDone(job_id=row.job_id, unit_id=0)
    await setup.scheduler.tell(sm.UnitFinished("w0", done))
    following = await next_assign(worker)
    assert following.unit_id == 1  # unit 0 was complete, not handed out again
    assert await setup.progress.resume_offset(row.job_id, 0) == 3


async def test_a_part_the_log_refuses_takes_the_unit_back_and_records_nothing(
    one_worker,
) -> None:
    setup, worker = one_worker
    row = await submit(setup)
    assign = await next_assign(worker)
    gap = dataclasses.replace(assign, start_record=1, record_count=2)  # records 0.. missing
    await record_part(setup, worker, gap, 1)
    assert await worker.next_message() == Cancel(job_id=row.job_id)
    assert await setup.progress.parts_of_unit(row.job_id, 0) == []
    assigns = await serve(setup, worker, row.job_id)
    again = next(a for a in assigns if a.unit_id == 0)
    assert again.start_record == 0
    assert (await finished(setup, row.job_id)).state == JobState.DONE


async def test_a_refused_part_takes_the_unit_back_and_hands_it_out_again(one_worker) -> None:
    setup, worker = one_worker
    row = await submit(setup)
    assign = await next_assign(worker)
    ack = await record_part(setup, worker, assign, 1)
    bad = dataclasses.replace(ack, first_record=1, sha256="0" * 64)
    await setup.scheduler.tell(sm.PartRefused("w0", bad, "part SHA-256 differs from the ack"))
    assert await worker.next_message() == Cancel(job_id=assign.job_id)
    assigns = await serve(setup, worker, row.job_id)
    again = next(a for a in assigns if a.unit_id == 0)
    assert again.start_record == 1
    assert (await finished(setup, row.job_id)).state == JobState.DONE


async def test_a_unit_whose_assign_cannot_be_sent_is_not_lost(one_worker) -> None:
    setup, worker = one_worker
    worker.reachable = False
    row = await submit(setup)
    await until(lambda: setup.scheduler.book[row.job_id].planned, "planning")
    assert worker.idle
    worker.reachable = True
    await setup.scheduler.tell(sm.WorkerUp("w0"))
    assigns = await serve(setup, worker, row.job_id)
    assert sorted(a.unit_id for a in assigns) == [0, 1, 2, 3]
    assert (await finished(setup, row.job_id)).state == JobState.DONE


async def test_an_idle_worker_takes_the_job_whose_models_it_has_loaded(tmp_path: Path) -> None:
    worker = FakeSupervisor("w0", models=OTHER_SPEC, up=False)
    setup = await open_scheduler(tmp_path, [worker])
    try:
        older = await submit(setup, "a", SPEC)
        newer = await submit(setup, "b", OTHER_SPEC)
        for run_id in (older.job_id, newer.job_id):
            await until(lambda r=run_id: setup.scheduler.book[r].planned, "planning")
        worker.up = True
        await setup.scheduler.tell(sm.WorkerUp("w0"))
        assign = await next_assign(worker)
        assert assign.job_id == newer.job_id
        assert assign.models.classifier == OTHER_SPEC.classifier
    finally:
        await close(setup)


@pytest.mark.parametrize("bad_input", [False, True])
async def test_a_worker_error_on_its_unit_fails_the_job_with_the_message(
    one_worker, bad_input: bool
) -> None:
    setup, worker = one_worker
    row = await submit(setup)
    assign = await next_assign(worker)
    error = WorkerError(
        message="cannot read the input: gone",
        fatal=False,
        job_id=row.job_id,
        unit_id=0,
        bad_input=bad_input,
    )
    await setup.scheduler.tell(sm.ErrorReported("w0", error))
    failed = await finished(setup, row.job_id)
    assert failed.state == JobState.FAILED
    assert failed.error == "unit 0: cannot read the input: gone"
    assert failed.error_code == ("invalid_input" if bad_input else None)  # exit 4, else 1
    assert assign.unit_id == 0
    assert worker.idle


async def test_a_restarted_scheduler_resumes_unfinished_jobs_and_drops_unrecorded_parts(
    tmp_path: Path,
) -> None:
    worker = FakeSupervisor("w0")
    setup = await open_scheduler(tmp_path, [worker])
    row = await submit(setup)
    assign = await next_assign(worker)
    ack = await record_part(setup, worker, assign, 1)
    stray = Path(ack.path).with_name("u000000-r0000000001.npz")  # written, never recorded
    stray.write_bytes(b"not recorded")
    await close(setup)

    worker = FakeSupervisor("w0")
    setup = await open_scheduler(tmp_path, [worker])
    try:
        await setup.scheduler.tell(sm.WorkerUp("w0"))  # its hello, after the restart
        resumed = await next_assign(worker)
        assert (resumed.unit_id, resumed.start_record) == (0, 1)
        assert (stray.exists(), Path(ack.path).exists()) == (False, True)  # noqa: ASYNC240
        assert setup.scheduler.book[row.job_id].row.records_done == 1
    finally:
        await close(setup)


async def test_status_adds_unrecorded_progress_and_a_death_counts_it_as_recomputed(
    one_worker,
) -> None:
    setup, worker = one_worker
    row = await submit(setup)
    assign = await next_assign(worker)
    batch = BatchDone(job_id=row.job_id, unit_id=0, records_done=2, frames_done=2)
    await setup.scheduler.tell(sm.Progress("w0", batch))
    await settled(setup)
    status = setup.scheduler.book.status_of(await job(setup, row.job_id))
    assert (status["records_done"], status["frames_done"]) == (2, 2)
    await record_part(setup, worker, assign, 1)  # 1 of the 2 computed records is durable
    await settled(setup)
    status = setup.scheduler.book.status_of(await job(setup, row.job_id))
    assert (status["records_done"], status["frames_done"]) == (2, 2)
    await setup.scheduler.tell(sm.WorkerDown("w0", "killed", died(worker)))
    await settled(setup)
    after = await job(setup, row.job_id)
    status = setup.scheduler.book.status_of(after)
    assert (status["records_done"], status["restarts"], status["records_recomputed"]) == (1, 1, 1)
    in_memory = setup.scheduler.book[row.job_id].row  # kept up without re-reading
    assert dataclasses.replace(in_memory, updated_at=0) == dataclasses.replace(after, updated_at=0)


async def test_a_parts_folder_of_a_job_the_database_does_not_know_is_set_aside_not_deleted(
    tmp_path: Path,
) -> None:
    worker = FakeSupervisor("w0")
    setup = await open_scheduler(tmp_path, [worker])
    row = await submit(setup)
    assign = await next_assign(worker)
    await record_part(setup, worker, assign, 1)
    await kill(setup, row.job_id)
    await close(setup)
    jobs = setup.config.state_dir / "jobs"
    ended, unknown = jobs / row.job_id, jobs / "f00dcafe"  # a crash left the first
    (ended / "parts").mkdir(parents=True)
    (unknown / "parts").mkdir(parents=True)
    (unknown / "parts" / "u000000-r0000000000.npz").write_bytes(b"someone's results")

    setup = await open_scheduler(tmp_path, [FakeSupervisor("w0")])
    try:
        await settled(setup)
        assert not ended.exists()
        assert not unknown.exists()
        aside = list((setup.config.state_dir / "orphaned").glob("f00dcafe-*"))
        assert len(aside) == 1
        kept = aside[0] / "parts" / "u000000-r0000000000.npz"
        assert kept.read_bytes() == b"someone's results"
    finally:
        await close(setup)


@pytest.mark.parametrize("how", ["rewritten in place", "replaced by rename"])
async def test_an_input_changed_after_planning_fails_the_job_at_the_next_unit(
    one_worker, how: str
) -> None:
    setup, worker = one_worker
    row = await submit(setup)
    first = await next_assign(worker)
    planned = os.stat(setup.input)
    changed = setup.input.read_text().replace("ACGT", "TGCA")
    if how == "rewritten in place":  # same headers, same line lengths, same size
        setup.input.write_text(changed)
        if os.stat(setup.input).st_mtime_ns == planned.st_mtime_ns:
            # The kernel's coarse file clock has not ticked since planning (ms here,
            # hours in production): move the time on as a later rewrite would.
            os.utime(setup.input, ns=(planned.st_atime_ns, planned.st_mtime_ns + 1_000_000))
    else:
        other = setup.tmp / "new.fa"
        other.write_text(changed)
        other.replace(setup.input)
    await compute_unit(setup, worker, first)
    failed = await finished(setup, row.job_id)
    assert failed.state == JobState.FAILED
    assert failed.error is not None
    assert failed.error.startswith(f"input changed since submission: {setup.input}")
    assert failed.error_code == "invalid_input"  # virnucctl wait exits 4
    assert ("replaced" in failed.error) == (how == "replaced by rename")
    assert not (setup.tmp / "out" / "prediction_results.txt").exists()


async def test_an_input_swapped_after_the_submit_checks_fails_the_job_unread(
    one_worker,
) -> None:
    """Submit records the fingerprint of the file it opened: a path swapped between the
    checks and planning (for a file the caller may not read) fails the job, unread."""
    setup, _worker = one_worker
    opened = input_fingerprint([setup.input])  # what check_submission found
    swapped = setup.tmp / "someone-elses.fa"
    swapped.write_text(setup.input.read_text().replace("ACGT", "TGCA"))
    swapped.replace(setup.input)
    row = await submit(setup, fingerprint=opened)
    failed = await finished(setup, row.job_id)
    assert failed.input_fingerprint == opened  # kept, not replaced by the planner's
    assert failed.error == (
        f"input changed since submission: {setup.input}: it was replaced by another file;"
        " resubmit the job to use the new one"
    )
    assert failed.records_total is None  # never planned, never read


async def test_an_input_changed_before_assembly_publishes_nothing(one_worker) -> None:
    setup, worker = one_worker
    row = await submit(setup)

    async def change_before_the_last_unit_done(assign: Assign) -> bool:
        if assign.unit_id != 3:
            return False
        await record_part(setup, worker, assign, assign.record_count)
        with setup.input.open("a") as grown:
            grown.write(">late\nACGT\n")
        done = UnitDone(job_id=assign.job_id, unit_id=assign.unit_id)
        await setup.scheduler.tell(sm.UnitFinished(worker.worker_id, done))
        return True

    await serve(setup, worker, row.job_id, change_before_the_last_unit_done)
    failed = await finished(setup, row.job_id)
    assert failed.state == JobState.FAILED
    assert "input changed since submission" in (failed.error or "")
    assert "size went from" in (failed.error or "")
    assert not (setup.tmp / "out" / "prediction_results.txt").exists()


class Disk:
    """The state disk's free space as the scheduler sees it (statvfs is faked: the
    real full disk is in tests/e2e/test_no_space.py, which needs root)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, free: int) -> None:
        self.free = free
        for module in (
            "virnuc.disk_space",
            "virnuc.daemon.jobs.unit_queue",
            "virnuc.daemon.jobs.space_wait",
        ):
            monkeypatch.setattr(f"{module}.free_bytes", lambda path: self.free)


async def no_assign_while_waiting(setup: Setup, worker: FakeSupervisor, job_id: str) -> str:
    """The job shows why it waits, and its unit is not handed out meanwhile (it is
    looked at again every 10 ms here, so 0.2 s is many tries)."""
    status = setup.scheduler.book.status_of(await job(setup, job_id))
    assert "waiting" in status, status
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(worker.sent.get(), 0.2)
    return status["waiting"]


async def test_a_unit_stopped_by_a_full_disk_waits_then_resumes_from_its_last_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch, free=10**9)
    worker = FakeSupervisor("w0")
    setup = await open_scheduler(  # no minimum: only the worker's ENOSPC stops the unit
        tmp_path, [worker], space_retry=0.01, space_retry_max=0.01, state_min_free_mb=0
    )
    try:
        row = await submit(setup)
        first = await next_assign(worker)
        await record_part(setup, worker, first, 1)
        disk.free = 0
        error = WorkerError(
            message="cannot write a checkpoint part: [Errno 28] No space left on device",
            fatal=False,
            job_id=row.job_id,
            unit_id=first.unit_id,
            no_space=True,
        )
        await setup.scheduler.tell(sm.ErrorReported("w0", error))
        await settled(setup)
        reason = await no_assign_while_waiting(setup, worker, row.job_id)
        assert reason.startswith(f"no space on {setup.config.state_dir / 'jobs'}: 0 B free, ")
        assert (await job(setup, row.job_id)).state == JobState.RUNNING

        disk.free = 10**9
        assigns = await serve(setup, worker, row.job_id)
        assert (assigns[0].unit_id, assigns[0].start_record) == (first.unit_id, 1)
        done = await finished(setup, row.job_id)
        assert done.state == JobState.DONE, done.error
        assert (done.restarts, done.records_recomputed) == (0, 0)  # nobody died
        assert output_ids(setup) == [f"r{i}" for i in range(RECORDS)]
    finally:
        await close(setup)


async def test_no_unit_is_handed_out_while_the_state_disk_is_below_its_minimum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch, free=1_000)
    worker = FakeSupervisor("w0")
    setup = await open_scheduler(
        tmp_path, [worker], space_retry=0.01, space_retry_max=0.01, state_min_free_mb=1
    )
    try:
        row = await submit(setup)
        await until(lambda: row.job_id in setup.scheduler.space, "the job to wait")
        reason = await no_assign_while_waiting(setup, worker, row.job_id)
        assert "1.0 kB free, about 1.0 MB needed" in reason
        disk.free = 2_000_000
        await serve(setup, worker, row.job_id)
        assert (await finished(setup, row.job_id)).state == JobState.DONE
    finally:
        await close(setup)


async def test_planning_on_a_full_state_disk_waits_in_sight_and_finishes_once_there_is_room(
    tmp_path: Path,
) -> None:
    """Item 5: the job neither fails nor hangs at `queued 0/?` for good."""
    setup = await open_scheduler(tmp_path, [], unit_records=1)  # no worker: planning only
    try:
        write_input(setup.input, records=2000)  # 2000 units: rows on many new pages
        await setup.progress._call_once(cap_pages, setup.progress, None)
        row = await submit(setup)
        waiting = await until(
            lambda: setup.scheduler.book.status_of(row).get("waiting"), "planning to wait for space"
        )
        assert waiting.startswith(f"no space on {setup.config.state_dir}"), waiting
        assert (await job(setup, row.job_id)).units_total is None
        await setup.progress._call_once(cap_pages, setup.progress, 1_000_000)
        planned = await until(
            lambda: setup.scheduler.book[row.job_id].planned, "planning to finish"
        )
        assert planned
        row = await job(setup, row.job_id)
        assert (row.state, row.records_total, row.units_total) == (JobState.QUEUED, 2000, 2000)
        assert "waiting" not in setup.scheduler.book.status_of(row)
    finally:
        await close(setup)


# --- publishing the outputs is the commit point ------------------------------------------


class HoldAt(Faults):
    """Holds the assembly's thread at fault point `point` until `go` is set; `reached`
    says it got there (the crash tests SIGKILL virnucd at the same point)."""

    def __init__(self, point: str) -> None:
        super().__init__()
        self.point = point
        self.reached, self.go = threading.Event(), threading.Event()

    def hit(self, point: str) -> None:
        if point == self.point and not self.reached.is_set():
            self.reached.set()
            assert self.go.wait(DEADLINE), "the test never let the assembly go on"


async def assembly_held_at(setup: Setup, worker: FakeSupervisor, point: str) -> tuple[str, HoldAt]:
    """Run a job until its assembly is held at `point`."""
    hold = HoldAt(point)
    setup.scheduler.faults = hold
    row = await submit(setup)
    await serve(setup, worker, row.job_id)
    assert await asyncio.to_thread(hold.reached.wait, DEADLINE), f"assembly never reached {point}"
    return row.job_id, hold


def events_of(setup: Setup, job_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{setup.config.database}?mode=ro", uri=True) as raw:
        query = "SELECT kind, message FROM events WHERE job_id = ? ORDER BY id"
        return [tuple(row) for row in raw.execute(query, (job_id,))]


async def test_a_kill_after_the_outputs_are_renamed_into_place_is_answered_that_the_job_finished(
    one_worker,
) -> None:
    """The kill reaches the scheduler before the assembly tells it the outputs are
    published: it waits for the assembly, which published, so the job is done."""
    setup, worker = one_worker
    job_id, hold = await assembly_held_at(setup, worker, "after_publish")
    reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    await setup.scheduler.tell(sm.KillJob(job_id, reply))
    await settled(setup)
    assert not reply.done()  # answered when the assembly ends, not before
    hold.go.set()
    with pytest.raises(JobFinished, match=r"^done$"):
        await asyncio.wait_for(reply, DEADLINE)
    assert (await finished(setup, job_id)).state == JobState.DONE
    assert output_ids(setup) == [f"r{i}" for i in range(RECORDS)]
    with pytest.raises(JobFinished, match=r"^done$"):
        await kill(setup, job_id)  # and any later kill changes nothing either


async def test_a_kill_before_the_outputs_are_published_stops_the_assembly_leaving_nothing(
    one_worker,
) -> None:
    setup, worker = one_worker
    job_id, hold = await assembly_held_at(setup, worker, "mid_assembly")
    reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    await setup.scheduler.tell(sm.KillJob(job_id, reply))
    await settled(setup)
    hold.go.set()
    assert await asyncio.wait_for(reply, DEADLINE) == {"job_id": job_id, "state": "killed"}
    assert (await job(setup, job_id)).state == JobState.KILLED
    assert not (setup.tmp / "out").exists() or os.listdir(setup.tmp / "out") == []


class HeldReport:
    """Stands in for the report writer: says when it starts, then waits for `set()`."""

    def __init__(self) -> None:
        self.reporting, self._go = threading.Event(), threading.Event()

    def __call__(self, out: Path, **info: Any) -> None:
        self.reporting.set()
        assert self._go.wait(DEADLINE)

    def set(self) -> None:
        self._go.set()


def hold_the_report(monkeypatch: pytest.MonkeyPatch) -> HeldReport:
    held = HeldReport()
    monkeypatch.setattr("virnuc.daemon.jobs.tasks.write_report", held)
    return held


async def test_a_kill_while_the_report_is_made_answers_finished_and_changes_nothing(
    one_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, worker = one_worker
    go = hold_the_report(monkeypatch)
    row = await submit(setup)
    await serve(setup, worker, row.job_id)
    assert await asyncio.to_thread(go.reporting.wait, DEADLINE), "no report was started"
    assert (await job(setup, row.job_id)).state == JobState.DONE  # recorded before the report
    with pytest.raises(JobFinished, match=r"^done$"):
        await kill(setup, row.job_id)
    go.set()
    assert (await job(setup, row.job_id)).state == JobState.DONE
    assert output_ids(setup) == [f"r{i}" for i in range(RECORDS)]


async def test_a_report_that_fails_leaves_the_job_done_with_a_warning_event(
    one_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, worker = one_worker

    def broken_report(out: Path, **info: Any) -> None:
        raise RuntimeError("the plot could not be drawn")

    monkeypatch.setattr("virnuc.daemon.jobs.tasks.write_report", broken_report)
    row = await submit(setup)
    await serve(setup, worker, row.job_id)
    expected = ("report.failed", "RuntimeError: the plot could not be drawn")
    await until(lambda: expected in events_of(setup, row.job_id), "the report.failed event")
    assert (await job(setup, row.job_id)).state == JobState.DONE
    assert output_ids(setup) == [f"r{i}" for i in range(RECORDS)]


async def test_a_shutdown_while_the_report_is_made_leaves_the_job_done(
    one_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, worker = one_worker
    go = hold_the_report(monkeypatch)
    row = await submit(setup)
    await serve(setup, worker, row.job_id)
    assert await asyncio.to_thread(go.reporting.wait, DEADLINE), "no report was started"
    with structlog.testing.capture_logs() as logs:
        await setup.scheduler.stop()  # does not wait for the report
    go.set()
    assert {"event": "report.interrupted", "job_id": row.job_id} in [
        {k: e.get(k) for k in ("event", "job_id")} for e in logs
    ]
    assert (await job(setup, row.job_id)).state == JobState.DONE
    assert output_ids(setup) == [f"r{i}" for i in range(RECORDS)]


async def test_a_submit_over_the_owners_unfinished_job_limit_is_refused_as_a_conflict(
    tmp_path: Path,
) -> None:
    setup = await open_scheduler(tmp_path, [FakeSupervisor("w0", up=False)], max_jobs_per_owner=2)
    try:
        first = await submit(setup, "a1", owner="uid:1001")
        await submit(setup, "a2", owner="uid:1001")
        with pytest.raises(SubmitRefused) as refused:
            await submit(setup, "a3", owner="uid:1001")
        assert refused.value.code == ErrorCode.CONFLICT
        message = refused.value.message
        assert "2 unfinished jobs" in message
        assert "at most 2" in message
        assert "virnucctl wait" in message
        assert "virnucctl kill" in message
        assert (await submit(setup, "b1", owner="uid:1002")).state == JobState.QUEUED
        await kill(setup, first.job_id)  # one of hers finished: room for one more
        assert (await submit(setup, "a3", owner="uid:1001")).state == JobState.QUEUED
        assert await setup.progress.count_jobs() == 4
    finally:
        await close(setup)


async def test_concurrent_submits_cannot_race_past_the_owners_limit(tmp_path: Path) -> None:
    setup = await open_scheduler(tmp_path, [FakeSupervisor("w0", up=False)], max_jobs_per_owner=3)
    try:
        outcomes = await asyncio.gather(
            *(submit(setup, f"o{n}", owner="uid:1001") for n in range(8)),
            return_exceptions=True,
        )
        refused = [o for o in outcomes if isinstance(o, SubmitRefused)]
        assert len(refused) == 5
        assert {r.code for r in refused} == {ErrorCode.CONFLICT}
        assert await setup.progress.count_jobs() == 3
    finally:
        await close(setup)


async def test_another_owners_small_job_finishes_while_a_big_job_runs_on_one_worker(
    tmp_path: Path,
) -> None:
    worker = FakeSupervisor("w0")
    write_input(tmp_path / "in.fa", records=40)  # the big job's: 14 units of 3 records
    small_input = tmp_path / "small.fa"
    write_input(small_input, records=6)  # its records' offsets are the big input's too
    setup = await open_scheduler(tmp_path, [worker], unit_records=3)
    try:
        big = await submit(setup, "big", owner="uid:1001")
        first = await next_assign(worker)
        assert first.job_id == big.job_id
        small = await submit(setup, "small", owner="uid:1002", input=small_input)
        status = setup.scheduler.book.status_of(await job(setup, small.job_id))
        assert status["queue_position"] == 1
        await until(lambda: setup.scheduler.book[small.job_id].planned, "planning")
        await compute_unit(setup, worker, first)  # the big job's unit runs to its end
        served = []
        while (await job(setup, small.job_id)).state != JobState.DONE:
            assign = await next_assign(worker)
            served.append(assign.job_id)
            await compute_unit(setup, worker, assign)
        assert served[:2] == [small.job_id, big.job_id]  # turns, from the next unit on
        assert served.count(small.job_id) == (await job(setup, small.job_id)).units_total
        assert (await job(setup, big.job_id)).state == JobState.RUNNING
    finally:
        await close(setup)
