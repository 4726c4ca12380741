"""Also covers queries.py, job_queries.py, connection.py, schema.py, rows.py via the facade.

The progress log: schema migrations, the rules that keep parts exactly-once, and
that SQLite is only ever touched on the log's own thread."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virnuc.daemon.progress import schema
from virnuc.daemon.progress.log import (
    ConflictError,
    NewJob,
    NotFoundError,
    PartRecord,
    PartRejected,
    ProgressLog,
    ProgressLogError,
    SchemaVersionError,
    UnitPlan,
)
from virnuc.pipeline.spec import ModelSpec

from tests.support.disks import cap_pages

SPEC = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300, "demo")


@pytest_asyncio.fixture
async def log(tmp_path: Path) -> AsyncIterator[ProgressLog]:
    async with await ProgressLog.open(tmp_path / "state.db") as opened:
        yield opened


def events(path: Path, job_id: str | None = None) -> list[tuple[str, str]]:
    """(kind, message) of the audit trail, newest first, read straight from the file."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as raw:
        rows = raw.execute(
            "SELECT kind, message FROM events WHERE (? IS NULL OR job_id = ?) ORDER BY id DESC",
            (job_id, job_id),
        )
        return [tuple(row) for row in rows]


def new_job(job_id: str = "j1") -> NewJob:
    return NewJob(job_id, "/in/x.fa", f"/out/{job_id}", SPEC, checkpoint_every=2)


async def planned_job(log: ProgressLog, counts: list[int], job_id: str = "j1") -> None:
    """A job whose units hold `counts` records each, planned and closed."""
    await log.create_job(new_job(job_id))
    units, first = [], 0
    for unit_id, count in enumerate(counts):
        units.append(UnitPlan(unit_id, 100 * first, first, count))
        first += count
    await log.add_units(job_id, units)
    await log.finish_planning(job_id, first, len(counts))


def part(unit: int, first: int, count: int, tag: str = "", job: str = "j1") -> PartRecord:
    digest = hashlib.sha256(f"{job}/{unit}/{first}/{count}/{tag}".encode()).hexdigest()
    return PartRecord(
        job, unit, first, count, 6 * count, f"/p/{unit}-{first}", 10, digest, 100 * (first + count)
    )


# --- opening, migrations, settings -------------------------------------------------------


@pytest.mark.asyncio
async def test_new_file_is_migrated_wal_full_and_foreign_keys(log: ProgressLog) -> None:
    assert await log.settings() == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL
        "foreign_keys": 1,
        "user_version": len(schema.MIGRATIONS),
    }


@pytest.mark.asyncio
async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with await ProgressLog.open(path) as first:
        await planned_job(first, [2])
        await first.record_part(part(0, 0, 2))
        await first.set_job_state("j1", "done")
    async with await ProgressLog.open(path) as again:
        job = await again.get_job("j1")
        assert job is not None
        assert (job.state, job.records_done, job.records_total, job.spec) == ("done", 2, 2, SPEC)
        assert (await again.settings())["user_version"] == len(schema.MIGRATIONS)


@pytest.mark.asyncio
async def test_a_version_1_file_opens_keeps_its_jobs_and_loses_the_workers_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as raw:  # as the first release left it
        raw.executescript(schema.MIGRATIONS[0])
        raw.execute(
            "INSERT INTO jobs (job_id, seq, state, input, output, spec, save_embeddings,"
            " checkpoint_every, force, created_at, updated_at) VALUES"
            " ('old', 1, 'queued', '/in.fa', '/out', ?, 0, 2, 0, 1.0, 1.0)",
            (json.dumps(SPEC.as_dict()),),
        )
        raw.execute("INSERT INTO workers VALUES ('w0', 1, 'cpu', 'idle', NULL, NULL, 1.0, 1.0)")
        raw.execute("PRAGMA user_version = 1")
    raw.close()
    async with await ProgressLog.open(path) as log:
        old = await log.get_job("old")
        assert old is not None
        assert (old.state, old.spec) == ("queued", SPEC)
        assert (await log.settings())["user_version"] == len(schema.MIGRATIONS)
    with sqlite3.connect(path) as raw:
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
    raw.close()
    assert "workers" not in tables
    assert {"jobs", "units", "parts", "events"} <= tables


@pytest.mark.asyncio
async def test_a_version_3_file_keeps_its_units_with_no_end_offset_nor_digest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as raw:  # as a virnuc without unit digests left it
        for script in schema.MIGRATIONS[:3]:
            raw.executescript(script)
        raw.execute(
            "INSERT INTO jobs (job_id, seq, state, input, output, spec, save_embeddings,"
            " checkpoint_every, force, created_at, updated_at, records_total, units_total)"
            " VALUES ('old', 1, 'running', '/in.fa', '/out', ?, 0, 2, 0, 1.0, 1.0, 5, 2)",
            (json.dumps(SPEC.as_dict()),),
        )
        raw.execute(
            "INSERT INTO units (job_id, unit_id, start_offset, first_record,"
            " record_count) VALUES ('old', 0, 0, 0, 3), ('old', 1, 300, 3, 2)"
        )
        raw.execute("PRAGMA user_version = 3")
    raw.close()
    async with await ProgressLog.open(path) as log:
        assert (await log.settings())["user_version"] == len(schema.MIGRATIONS)
        units = await log.pending_units("old", 10)
    assert [(u.unit_id, u.start_offset, u.end_offset, u.digest) for u in units] == [
        (0, 0, None, None),
        (1, 300, None, None),
    ]


@pytest.mark.asyncio
async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {len(schema.MIGRATIONS) + 1}")
    raw.close()
    with pytest.raises(SchemaVersionError, match="newer than this virnuc knows"):
        await ProgressLog.open(path)


@pytest.mark.asyncio
async def test_a_failing_migration_leaves_the_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    await (await ProgressLog.open(path)).close()
    broken = "CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);"
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, broken))
    with pytest.raises(ProgressLogError, match="no_such_table"):
        await ProgressLog.open(path)
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS) - 1
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
        assert "half_done" not in tables
    finally:
        raw.close()


@pytest.mark.asyncio
async def test_unopenable_path_is_a_progress_log_error(tmp_path: Path) -> None:
    with pytest.raises(ProgressLogError, match="cannot open"):
        await ProgressLog.open(tmp_path / "missing-dir" / "state.db")


@pytest.mark.asyncio
async def test_all_sql_runs_on_one_thread_that_is_not_the_loop(tmp_path: Path) -> None:
    seen: list[tuple[int, str]] = []

    def trace(sql: str) -> None:
        seen.append((threading.get_ident(), sql))

    # Opening (and migrating), writes, reads, paging and closing.
    async with await ProgressLog.open(tmp_path / "state.db", trace=trace) as log:
        await planned_job(log, [3])
        await log.record_part(part(0, 0, 3))
        assert [p.first_record async for p in log.iter_parts("j1")] == [0]
    threads = {ident for ident, _ in seen}
    assert len(seen) > 10
    assert len(threads) == 1
    assert threading.get_ident() not in threads


@pytest.mark.asyncio
async def test_close_finishes_queued_work_then_refuses_more(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    log = await ProgressLog.open(path)
    writes = [asyncio.create_task(log.log_event("note", str(i))) for i in range(50)]
    await asyncio.sleep(0)  # every task has queued its write on the log's thread
    await asyncio.shield(log.close())
    await asyncio.gather(*writes)
    with pytest.raises(ProgressLogError, match="closed"):
        await log.count_jobs()
    assert len(events(path)) == 50


# --- jobs ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_jobs_queue_in_order_and_list_oldest_first(log: ProgressLog) -> None:
    for job_id in ("a", "b", "c"):
        await log.create_job(new_job(job_id))
    with pytest.raises(ConflictError, match="already taken"):
        await log.create_job(new_job("b"))
    assert [j.seq for j in await log.list_jobs()] == [1, 2, 3]
    assert [j.job_id for j in await log.list_jobs(offset=1, limit=1)] == ["b"]
    await log.set_job_state("a", "running")
    await log.set_job_state("b", "killed")
    assert [j.job_id for j in await log.unfinished_jobs()] == ["a", "c"]
    assert await log.count_jobs() == 3
    assert await log.get_job("nope") is None


@pytest.mark.asyncio
async def test_jobs_list_and_count_by_owner_in_order(log: ProgressLog) -> None:
    owners = {"a": "uid:1001", "b": "uid:1002", "c": "uid:1001", "d": None}
    for job_id, owner in owners.items():
        await log.create_job(dataclasses.replace(new_job(job_id), owner=owner))
    assert [j.job_id for j in await log.list_jobs(owner="uid:1001")] == ["a", "c"]
    assert [j.job_id for j in await log.list_jobs(offset=1, owner="uid:1001")] == ["c"]
    assert [j.owner for j in await log.list_jobs(owner="uid:1002")] == ["uid:1002"]
    assert await log.count_jobs(owner="uid:1001") == 2
    assert await log.count_jobs(owner="key:laptop") == 0
    assert await log.count_jobs() == 4  # no owner filter: every job, unowned ones too


@pytest.mark.asyncio
async def test_terminal_states_are_final_and_logged(log: ProgressLog, tmp_path: Path) -> None:
    created = await log.create_job(new_job())
    assert (created.state, created.records_total, created.finished_at) == ("queued", None, None)
    running = await log.set_job_state("j1", "running")
    assert running.finished_at is None
    failed = await log.set_job_state("j1", "failed", error="unit 3 killed 3 workers")
    assert failed.finished_at is not None
    assert failed.error == "unit 3 killed 3 workers"
    with pytest.raises(ConflictError, match="cannot become running"):
        await log.set_job_state("j1", "running")
    with pytest.raises(NotFoundError):
        await log.set_job_state("nope", "running")
    kinds = [kind for kind, _ in events(tmp_path / "state.db", "j1")]
    assert kinds == ["job.state", "job.state", "job.submitted"]
    restarted = await log.add_restart("j1", lost_records=3)
    assert (restarted.restarts, restarted.records_recomputed) == (1, 3)
    assert restarted == await log.get_job("j1")  # the row returned is the row committed


# --- planning ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_planning_in_batches_can_be_replayed_but_not_changed(log: ProgressLog) -> None:
    await log.create_job(new_job())
    await log.add_units("j1", [UnitPlan(0, 0, 0, 5), UnitPlan(1, 500, 5, 5)])
    await log.add_units("j1", [UnitPlan(1, 500, 5, 5), UnitPlan(2, 900, 10, 1)])  # replay
    with pytest.raises(ConflictError, match="differs from stored"):
        await log.add_units("j1", [UnitPlan(2, 900, 10, 2)])
    with pytest.raises(ConflictError, match="does not follow"):
        await log.add_units("j1", [UnitPlan(3, 950, 12, 1)])  # records 11 missing
    with pytest.raises(ConflictError, match="planned 11 records in 3 units"):
        await log.finish_planning("j1", 12, 3)
    await log.finish_planning("j1", 11, 3)
    await log.finish_planning("j1", 11, 3)  # idempotent
    job = await log.get_job("j1")
    assert job is not None
    assert (job.records_total, job.units_total) == (11, 3)
    with pytest.raises(ConflictError, match="planning has finished"):
        await log.add_units("j1", [UnitPlan(3, 950, 11, 1)])
    with pytest.raises(NotFoundError):
        await log.add_units("nope", [UnitPlan(0, 0, 0, 1)])


@pytest.mark.asyncio
async def test_units_of_several_inputs_go_file_after_file_offsets_restarting_in_each(
    log: ProgressLog,
) -> None:
    inputs = ("/in/a.fa", "/in/b.fq", "/in/c.fq")
    job = await log.create_job(dataclasses.replace(new_job(), input=inputs[0], inputs=inputs))
    assert job.inputs == inputs
    d = "d" * 32
    await log.add_units("j1", [UnitPlan(0, 0, 0, 5, 500, d, 0), UnitPlan(1, 0, 5, 2, 80, d, 1)])
    await log.add_units("j1", [UnitPlan(1, 0, 5, 2, 80, d, 1)])  # replay
    with pytest.raises(ConflictError, match="differs from stored"):  # the same, other file
        await log.add_units("j1", [UnitPlan(1, 0, 5, 2, 80, d, 2)])
    with pytest.raises(ConflictError, match="does not follow"):  # back to an earlier file
        await log.add_units("j1", [UnitPlan(2, 80, 7, 1, 90, d, 0)])
    with pytest.raises(ConflictError, match="does not follow"):  # a file skipped
        await log.add_units("j1", [UnitPlan(2, 0, 7, 1, 90, d, 3)])
    with pytest.raises(ConflictError, match="does not follow"):  # a byte gap in a file
        await log.add_units("j1", [UnitPlan(2, 81, 7, 1, 90, d, 1)])
    await log.add_units("j1", [UnitPlan(2, 0, 7, 1, 90, d, 2)])
    units = await log.pending_units("j1", 10)
    assert [(u.input_index, u.start_offset, u.first_record) for u in units] == [
        (0, 0, 0),
        (1, 0, 5),
        (2, 0, 7),
    ]
    again = await log.get_job("j1")
    assert again is not None
    assert again.inputs == inputs


@pytest.mark.asyncio
async def test_unit_digests_are_stored_replayed_and_must_match(log: ProgressLog) -> None:
    await log.create_job(new_job())
    a, b = "a" * 32, "b" * 32
    await log.add_units("j1", [UnitPlan(0, 0, 0, 5, 500, a), UnitPlan(1, 500, 5, 5, 900, b)])
    await log.add_units("j1", [UnitPlan(1, 500, 5, 5, 900, b)])  # replay
    with pytest.raises(ConflictError, match="input changed since submission: the bytes of unit 1"):
        await log.add_units("j1", [UnitPlan(1, 500, 5, 5, 900, a)])
    with pytest.raises(ConflictError, match="does not follow"):  # a byte gap after unit 1
        await log.add_units("j1", [UnitPlan(2, 901, 10, 1, 950, a)])
    with pytest.raises(ConflictError, match="does not follow"):  # ends before it starts
        await log.add_units("j1", [UnitPlan(2, 900, 10, 1, 900, a)])
    await log.add_units("j1", [UnitPlan(2, 900, 10, 1, 950, a)])
    units = await log.pending_units("j1", 10)
    assert [(u.start_offset, u.end_offset, u.digest) for u in units] == [
        (0, 500, a),
        (500, 900, b),
        (900, 950, a),
    ]


# --- units and parts --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_record_part_tiles_the_unit_and_updates_totals(log: ProgressLog) -> None:
    await planned_job(log, [5, 3])
    assert await log.resume_offset("j1", 0) == 0
    assert (await log.record_part(part(0, 0, 2))).recorded
    assert await log.resume_offset("j1", 0) == 2
    for bad, reason in [
        (part(0, 3, 1), "gap"),
        (part(0, 1, 2), "overlap"),
        (part(0, 2, 4), "past_end"),
        (part(0, 0, 2, tag="other bytes"), "conflict"),
        (part(9, 0, 1), "unknown_unit"),
        (part(0, 2, 0), "invalid"),
    ]:
        with pytest.raises(PartRejected) as rejected:
            await log.record_part(bad)
        assert rejected.value.reason == reason
    again = await log.record_part(part(0, 0, 2))  # a retried ack
    assert (again.recorded, again.unit_done) == (False, False)
    done = await log.record_part(part(0, 2, 3))
    assert (done.recorded, done.unit_done) == (True, True)
    assert await log.resume_offset("j1", 1) == 5  # unit 1 starts at record 5
    job = await log.get_job("j1")
    assert job is not None
    assert (job.records_done, job.frames_done) == (5, 30)
    assert [u.unit_id for u in await log.pending_units("j1", 10)] == [1]
    assert await log.units_remaining("j1") == 1


@pytest.mark.asyncio
async def test_a_part_is_one_transaction_that_returns_the_row_sqlite_holds(
    tmp_path: Path,
) -> None:
    """The part, the job's counters, the unit done and its failures cleared: one write
    (one BEGIN, one COMMIT), and the job row it returns is the committed row."""
    statements: list[str] = []
    async with await ProgressLog.open(tmp_path / "state.db", trace=statements.append) as log:
        await planned_job(log, [2, 2])
        assert await log.note_worker_death("j1", 0) == 1
        statements.clear()
        outcome = await log.record_part(part(0, 0, 2))
        assert [s for s in statements if s.startswith(("BEGIN", "COMMIT"))] == [
            "BEGIN IMMEDIATE",
            "COMMIT",
        ]
        assert (outcome.recorded, outcome.unit_done) == (True, True)
        assert outcome.job == await log.get_job("j1")
        assert (outcome.job.records_done, outcome.job.frames_done) == (2, 12)
        assert await log.units_remaining("j1") == 1  # unit 0 is done
        assert await log.note_worker_death("j1", 0) == 1  # its failure count was cleared


@pytest.mark.asyncio
async def test_a_retried_ack_counts_once_and_returns_the_row_unchanged(log: ProgressLog) -> None:
    await planned_job(log, [4])
    first = await log.record_part(part(0, 0, 2))
    again = await log.record_part(part(0, 0, 2))
    assert (again.recorded, again.unit_done) == (False, False)
    assert again.job == first.job == await log.get_job("j1")
    assert (again.job.records_done, again.job.frames_done) == (2, 12)
    assert len(await log.parts_of_unit("j1", 0)) == 1


@pytest.mark.asyncio
async def test_parts_of_a_finished_job_are_rejected(log: ProgressLog) -> None:
    await planned_job(log, [2])
    await log.record_part(part(0, 0, 1))
    await log.set_job_state("j1", "killed")
    with pytest.raises(PartRejected) as rejected:
        await log.record_part(part(0, 1, 1))
    assert rejected.value.reason == "job_finished"
    assert not (await log.record_part(part(0, 0, 1))).recorded  # retried ack still fine


@pytest.mark.asyncio
async def test_resume_offset_refuses_parts_that_do_not_tile(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with await ProgressLog.open(path) as log:
        await planned_job(log, [6])
        await log.record_part(part(0, 0, 2))
        await log.record_part(part(0, 2, 2))
    raw = sqlite3.connect(path)
    try:  # someone edits the file behind our back: a gap at records 0..1
        with raw:
            raw.execute("DELETE FROM parts WHERE first_record = 0")
    finally:
        raw.close()
    async with await ProgressLog.open(path) as log:
        with pytest.raises(ProgressLogError, match="do not tile"):
            await log.resume_offset("j1", 0)
        with pytest.raises(ProgressLogError, match="do not tile"):
            await log.record_part(part(0, 4, 2))


@pytest.mark.asyncio
async def test_delete_parts_rolls_totals_back_and_reopens_the_unit(log: ProgressLog) -> None:
    await planned_job(log, [6])
    for first in (0, 2, 4):
        await log.record_part(part(0, first, 2))
    assert await log.units_remaining("j1") == 0
    deleted, row = await log.delete_parts("j1", 0, from_record=2)
    assert [p.first_record for p in deleted] == [2, 4]
    assert row == await log.get_job("j1")
    assert await log.resume_offset("j1", 0) == 2
    job = await log.get_job("j1")
    assert job is not None
    assert (job.records_done, job.frames_done, job.records_recomputed) == (2, 12, 4)
    assert [u.state for u in await log.pending_units("j1", 10)] == ["pending"]
    assert (await log.record_part(part(0, 2, 4, tag="recomputed"))).unit_done


@pytest.mark.asyncio
async def test_unit_states_failures_and_restart_reset(log: ProgressLog) -> None:
    await planned_job(log, [1, 1, 1])
    await planned_job(log, [1], job_id="j2")
    await log.set_unit_state("j1", 0, "running")
    await log.set_unit_state("j1", 1, "running")
    await log.set_unit_state("j2", 0, "running")
    with pytest.raises(ConflictError, match="not all records"):
        await log.set_unit_state("j1", 2, "done")
    with pytest.raises(NotFoundError):
        await log.set_unit_state("j1", 7, "running")
    assert await log.reset_running_units("j2") == 1
    assert await log.reset_running_units() == 2
    assert [u.unit_id for u in await log.pending_units("j1", 2)] == [0, 1]
    assert await log.note_worker_death("j1", 1) == 1
    assert await log.note_worker_death("j1", 1) == 2
    await log.record_part(part(1, 1, 1))  # progress on the unit clears its failures
    assert await log.note_worker_death("j1", 1) == 1


@pytest.mark.asyncio
async def test_parts_page_in_input_order_across_units(log: ProgressLog) -> None:
    await planned_job(log, [4, 1, 4])
    # Record out of unit order, as parallel workers would.
    for unit, first, count in [(2, 5, 2), (0, 0, 2), (1, 4, 1), (2, 7, 2), (0, 2, 2)]:
        await log.record_part(part(unit, first, count))
    want = [(0, 0), (0, 2), (1, 4), (2, 5), (2, 7)]
    page = await log.parts_page("j1", limit=2)
    assert [(p.unit_id, p.first_record) for p in page] == want[:2]
    rest = await log.parts_page("j1", after=(0, 2), limit=10)
    assert [(p.unit_id, p.first_record) for p in rest] == want[2:]
    streamed = [(p.unit_id, p.first_record) async for p in log.iter_parts("j1", page_size=2)]
    assert streamed == want
    assert [p.first_record for p in await log.parts_of_unit("j1", 2)] == [5, 7]


Ack = tuple[int, int, int, int]  # unit, first_record, record_count, content tag


def model_accepts(
    recorded: dict[tuple[int, int], tuple[int, int]], ends: list[int], starts: list[int], ack: Ack
) -> bool | None:
    """Reference rules: True = recorded, False = retried ack (no-op), None = rejected."""
    unit, first, count, tag = ack
    if (unit, first) in recorded:
        return False if recorded[unit, first] == (count, tag) else None
    resume = max([f + c for (u, f), (c, _) in recorded.items() if u == unit], default=starts[unit])
    if first != resume or first + count > ends[unit]:
        return None
    recorded[unit, first] = (count, tag)
    return True


async def replay_acks(path: Path, counts: list[int], acks: list[Ack]) -> None:
    starts = [sum(counts[:i]) for i in range(len(counts))]
    ends = [s + c for s, c in zip(starts, counts, strict=True)]
    recorded: dict[tuple[int, int], tuple[int, int]] = {}
    async with await ProgressLog.open(path) as log:
        await planned_job(log, counts)
        for unit, offset, count, tag in acks:
            ack = (unit, starts[unit] + offset, count, tag)
            want = model_accepts(recorded, ends, starts, ack)
            try:
                got: bool | None = (await log.record_part(part(*ack[:3], tag=str(tag)))).recorded
            except PartRejected:
                got = None
            assert got == want, ack
        job = await log.get_job("j1")
        assert job is not None
        assert job.records_done == sum(c for c, _ in recorded.values())
        for unit in range(len(counts)):
            resume = await log.resume_offset("j1", unit)
            assert resume == max(
                [f + c for (u, f), (c, _) in recorded.items() if u == unit], default=starts[unit]
            )
        unfinished = [u for u in range(len(counts)) if await log.resume_offset("j1", u) < ends[u]]
        assert await log.units_remaining("j1") == len(unfinished)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    counts=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    raw_acks=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 5), st.integers(1, 3), st.integers(0, 1)),
        max_size=25,
    ),
)
def test_any_ack_stream_leaves_parts_tiling_their_units(
    counts: list[int], raw_acks: list[Ack]
) -> None:
    """Retried, reordered, overlapping and conflicting acks: the log accepts exactly
    what the reference rules accept, and totals always match the accepted parts."""
    acks = [(u % len(counts), o, c, t) for u, o, c, t in raw_acks]
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(replay_acks(Path(tmp) / "state.db", counts, acks))


# --- events ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_events_are_pruned_to_the_newest(tmp_path: Path) -> None:
    async with await ProgressLog.open(tmp_path / "state.db", max_events=20) as log:
        for i in range(95):
            await log.log_event("note", f"n{i}", job_id="j" if i % 2 else None, worker_id="w")
    trail = events(tmp_path / "state.db")
    assert 20 <= len(trail) <= 22  # pruned every max_events // 10 inserts
    assert trail[0][1] == "n94"
    assert [message for _, message in events(tmp_path / "state.db", "j")[:2]] == ["n93", "n91"]


@pytest.mark.asyncio
async def test_a_write_that_finds_the_disk_full_waits_and_commits_once_there_is_room(
    log: ProgressLog,
) -> None:
    await log.create_job(new_job())
    await log._call_once(cap_pages, log, None)
    writes = asyncio.gather(*(log.log_event("note", "x" * 2000, job_id="j1") for _ in range(40)))
    while log.disk_full is None:  # the first write that needs a page fails and waits
        assert not writes.done(), "every write fitted: the cap did not bite"
        await asyncio.sleep(0.01)
    assert "no space on" in log.disk_full
    # A job whose row cannot fit in what is left of any page. Not retried: a submit says so.
    big = NewJob("j2", "/in/" + "x" * 3000, "/out/j2", SPEC, checkpoint_every=2)
    with pytest.raises(ProgressLogError, match="full"):
        await log.create_job(big)
    await log._call_once(cap_pages, log, 1_000_000)
    await asyncio.wait_for(writes, 10)
    assert log.disk_full is None
    notes = [message for kind, message in events(Path(log.path), "j1") if kind == "note"]
    assert len(notes) == 40  # each exactly once: a failed transaction left nothing


def an_old_job(path: Path, version: int, **columns: object) -> None:
    """A state db as a virnuc of schema `version` left it, holding one job, 'old'."""
    row: dict[str, object] = {
        "job_id": "old",
        "seq": 1,
        "state": "queued",
        "input": "/in.fa",
        "output": "/out",
        "spec": json.dumps(SPEC.as_dict()),
        "save_embeddings": 0,
        "checkpoint_every": 2,
        "force": 0,
        "created_at": 1.0,
        "updated_at": 1.0,
        **columns,
    }
    with sqlite3.connect(path) as raw:
        for script in schema.MIGRATIONS[:version]:
            raw.executescript(script)
        raw.execute(
            f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        raw.execute(f"PRAGMA user_version = {version}")
    raw.close()


@pytest.mark.asyncio
async def test_a_job_keeps_the_name_of_its_model_set_and_older_jobs_have_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    an_old_job(path, 8)  # as a virnuc without model sets left it
    async with await ProgressLog.open(path) as log:
        old = await log.get_job("old")
        assert old is not None
        assert old.model_set is None
        created = await log.create_job(dataclasses.replace(new_job("new"), model_set="default"))
        assert created.model_set == "default"
        again = await log.get_job("new")
        assert again is not None
        assert again.model_set == "default"


@pytest.mark.asyncio
async def test_reused_frames_count_once_with_their_part(log: ProgressLog) -> None:
    """A part's reused frames add to its job's like its frames; a part deleted and
    computed again (a crash, a corrupt file) is counted once, as recomputed."""
    await planned_job(log, [6])
    await log.record_part(dataclasses.replace(part(0, 0, 2), frames_reused=5))
    await log.record_part(dataclasses.replace(part(0, 2, 2), frames_reused=3))
    again = await log.record_part(dataclasses.replace(part(0, 2, 2), frames_reused=3))
    assert not again.recorded  # a retried ack
    assert again.job.frames_reused == 8
    _, row = await log.delete_parts("j1", 0, from_record=2)
    assert (row.frames_done, row.frames_reused) == (12, 5)
    redone = await log.record_part(dataclasses.replace(part(0, 2, 4, "again"), frames_reused=1))
    assert (redone.job.frames_done, redone.job.frames_reused) == (36, 6)
    assert [p.frames_reused for p in await log.parts_of_unit("j1", 0)] == [5, 1]


@pytest.mark.asyncio
async def test_a_part_cannot_reuse_more_frames_than_it_has(log: ProgressLog) -> None:
    await planned_job(log, [2])
    with pytest.raises(PartRejected, match="frames_reused"):
        await log.record_part(dataclasses.replace(part(0, 0, 2), frames_reused=13))


@pytest.mark.asyncio
async def test_parts_and_jobs_of_before_reuse_count_none(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    an_old_job(path, 9, state="running", frames_done=7)  # as a virnuc without frame reuse left it
    async with await ProgressLog.open(path) as log:
        old = await log.get_job("old")
        assert old is not None
        assert (old.frames_done, old.frames_reused) == (7, 0)
