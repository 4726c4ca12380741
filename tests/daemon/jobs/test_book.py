"""The job book on a real progress log: each write of a job's row leaves the job's
`JobRun` holding that row as committed, and finishing a job drops it everywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from virnuc.daemon.config import DaemonConfig
from virnuc.daemon.jobs.book import JobBook
from virnuc.daemon.jobs.run import JobRun
from virnuc.daemon.jobs.space_wait import SpaceWaits
from virnuc.daemon.progress.log import NewJob, ProgressLog, UnitPlan
from virnuc.pipeline.spec import ModelSpec
from virnuc.protocol import Checkpoint, EventType, JobState, decode_event

pytestmark = pytest.mark.asyncio

SPEC = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300)
FASTA = b">r0\nACGT\n>r1\nACGT\n"


class FakeEvents:
    def __init__(self) -> None:
        self.frames: list[list[bytes]] = []

    def publish(self, frames: list[bytes]) -> None:
        self.frames.append(frames)

    def states(self) -> list[str]:
        """The states of the `state` events published, in order."""
        events = [decode_event(frames) for frames in self.frames]
        return [event.body["state"] for event in events if event.type == EventType.JOB_STATE]


class Setup:
    def __init__(self, tmp: Path, progress: ProgressLog) -> None:
        self.tmp = tmp
        self.progress = progress
        self.config = DaemonConfig(state_dir=tmp / "state")
        self.events = FakeEvents()

        async def wake(job_id: str) -> None:
            pass

        space = SpaceWaits(1.0, 1.0, wake, lambda job_id: None)
        self.book = JobBook(self.config, progress, self.events, space)  # type: ignore[arg-type]

    async def committed(self, run: JobRun) -> bool:
        """Whether the run holds its job's row as the progress log has it now."""
        return run.row == await self.progress.get_job(run.job_id)


@pytest_asyncio.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    (tmp_path / "state").mkdir()
    (tmp_path / "in.fa").write_bytes(FASTA)
    progress = await ProgressLog.open(tmp_path / "state" / "virnuc.db")
    yield Setup(tmp_path, progress)
    await progress.close()


def new_job(tmp: Path) -> NewJob:
    return NewJob("j1", str(tmp / "in.fa"), str(tmp / "out"), SPEC, checkpoint_every=1)


def part_of(setup: Setup, run: JobRun) -> Checkpoint:
    """Record 0 of unit 0, written where the job's parts go."""
    parts = setup.config.job_dir(run.job_id) / "parts"
    parts.mkdir(parents=True)
    path = parts / "u000000-r0000000000.npz"
    path.write_bytes(b"part")
    return Checkpoint(
        job_id=run.job_id,
        unit_id=0,
        first_record=0,
        record_count=1,
        end_offset=9,
        path=str(path),
        size=4,
        sha256="0" * 64,
        frames=1,
    )


async def test_every_write_leaves_the_run_holding_the_row_as_committed(setup: Setup) -> None:
    run = await setup.book.create(new_job(setup.tmp))
    assert await setup.committed(run)
    assert setup.book.get("j1") is run
    assert str(setup.tmp / "out") in setup.book.busy_outputs()

    await setup.book.fingerprint_input(run)
    assert run.row.input_fingerprint is not None
    assert await setup.committed(run)

    await setup.progress.add_units("j1", [UnitPlan(0, 0, 0, 2)])
    await setup.book.finish_planning(run, 2, 1)
    assert run.planned
    assert run.row.units_total == 1
    assert await setup.committed(run)

    await setup.book.set_state(run, JobState.RUNNING)
    assert await setup.committed(run)

    ack = part_of(setup, run)
    assert await setup.book.record_part(ack)
    assert run.row.records_done == 1
    assert await setup.committed(run)
    assert not await setup.book.record_part(ack)  # a retried ack counts nothing

    await setup.book.add_restart(run, 1)
    assert run.row.restarts == 1
    assert await setup.committed(run)

    await setup.book.delete_parts(run, 0, 0)
    assert run.row.records_done == 0
    assert await setup.committed(run)
    assert not Path(ack.path).exists()  # noqa: ASYNC240
    assert setup.events.states() == ["queued", "running"]


async def test_finishing_a_job_records_its_state_and_drops_it_everywhere(setup: Setup) -> None:
    run = await setup.book.create(new_job(setup.tmp))
    setup.config.job_dir("j1").mkdir(parents=True)

    await setup.book.finish(run, JobState.KILLED)

    assert run.row.state == JobState.KILLED
    assert await setup.committed(run)
    assert "j1" not in setup.book
    assert len(setup.book) == 0
    assert setup.book.busy_outputs() == set()
    assert not setup.config.job_dir("j1").exists()
    assert setup.book.status_of(run.row)["state"] == "killed"
    assert setup.events.states() == ["queued", "killed"]


async def test_a_queued_job_shows_its_place_in_the_queue_looked_up_once_per_list(
    setup: Setup,
) -> None:
    lookups = []

    def positions() -> dict[str, int]:
        lookups.append(1)
        return {"j1": 2, "j2": 1}

    book = JobBook(setup.config, setup.progress, setup.events, setup.book.space, positions)  # type: ignore[arg-type]
    jobs = [
        NewJob(f"j{n}", str(setup.tmp / "in.fa"), str(setup.tmp / f"o{n}"), SPEC, 1) for n in (1, 2)
    ]
    runs = [await book.create(job) for job in jobs]
    lookups.clear()  # each creation's `state` event showed its place

    statuses = book.statuses_of([run.row for run in runs])

    assert [status["queue_position"] for status in statuses] == [2, 1]
    assert len(lookups) == 1
    assert book.status_of(runs[0].row)["queue_position"] == 2
    await book.set_state(runs[0], JobState.RUNNING)
    assert "queue_position" not in book.status_of(runs[0].row)
    await book.finish(runs[1], JobState.KILLED)
    lookups.clear()
    assert "queue_position" not in book.statuses_of([runs[1].row])[0]
    assert lookups == []  # no queued job among the rows: the queue is not looked at
