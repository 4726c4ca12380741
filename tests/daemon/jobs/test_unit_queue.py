"""daemon/jobs/unit_queue.py and owner_lines.py: which unit an idle worker gets next.

The queue runs on a real progress log with planned jobs (no planner, no worker): a
test hands units out as the scheduler does and takes them back as a unit's end would,
and looks at the order the owners and their jobs were served in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from virnuc.daemon.config import DaemonConfig
from virnuc.daemon.jobs.book import JobBook
from virnuc.daemon.jobs.run import JobRun
from virnuc.daemon.jobs.space_wait import SpaceWaits
from virnuc.daemon.jobs.unit_queue import UnitQueue
from virnuc.daemon.progress.log import NewJob, ProgressLog, UnitPlan
from virnuc.daemon.scheduler_messages import Assignment
from virnuc.pipeline.spec import ModelSpec
from virnuc.protocol import Assign, JobState

pytestmark = pytest.mark.asyncio

SPEC = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300)
ALICE, BOB, CAROL = "uid:1001", "uid:1002", "key:carol"


class FakeSlot:
    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id

    async def assign(self, assignment: Assignment, message: Assign) -> bool:
        return True

    async def release(self, assignment: Assignment, *, cancel: bool = False) -> None:
        pass


class FakeEvents:
    def publish(self, frames: list[bytes]) -> None:
        pass


class Queue:
    """A `UnitQueue` and the book it reads, as the scheduler holds them."""

    def __init__(self, tmp: Path, progress: ProgressLog) -> None:
        self.tmp = tmp
        self.progress = progress
        self.config = DaemonConfig(state_dir=tmp / "state")

        async def wake(job_id: str) -> None:
            pass

        space = SpaceWaits(1.0, 1.0, wake, lambda job_id: None)
        self.book = JobBook(self.config, progress, FakeEvents(), space)  # type: ignore[arg-type]
        self.queue = UnitQueue(self.config, progress, self.book, space)
        self.slot = FakeSlot("w0")

    async def job(self, name: str, owner: str | None, units: int) -> JobRun:
        """A submitted job of `owner`, planned into `units` units of one record each."""
        job = NewJob(name, str(self.tmp / "in.fa"), str(self.tmp / name), SPEC, 1, owner=owner)
        run = await self.book.create(job)
        self.queue.admit(run)
        plan = [UnitPlan(i, i * 9, i, 1) for i in range(units)]
        await self.progress.add_units(name, plan)
        await self.book.finish_planning(run, units, units)
        return run

    async def start(self) -> tuple[str, int]:
        """Hand the next unit to a worker, as the scheduler's dispatch does."""
        picked = await self.queue.next_unit(SPEC)
        assert picked is not None, "no unit to hand out"
        run, unit = picked
        await self.queue.hand_out(self.slot, run, unit)
        return run.job_id, unit.unit_id

    def end(self, job_id: str, unit_id: int) -> None:
        """The unit ended (done): its worker is free, the job's other units remain."""
        assert self.book[job_id].take_back(unit_id) is not None

    async def one_worker(self, units: int) -> list[str]:
        """A single worker computing `units` units one after the other: their jobs."""
        order = []
        for _ in range(units):
            job_id, unit_id = await self.start()
            self.end(job_id, unit_id)
            order.append(job_id)
        return order


@pytest_asyncio.fixture
async def queue(tmp_path: Path) -> AsyncIterator[Queue]:
    (tmp_path / "state").mkdir()
    (tmp_path / "in.fa").write_text("".join(f">r{i}\nACGT\n" for i in range(8)))
    progress = await ProgressLog.open(tmp_path / "state" / "virnuc.db")
    yield Queue(tmp_path, progress)
    await progress.close()


async def test_the_owner_with_the_fewest_running_units_goes_first(queue: Queue) -> None:
    await queue.job("a", ALICE, 4)
    await queue.job("b", BOB, 4)
    assert [(await queue.start())[0] for _ in range(4)] == ["a", "b", "a", "b"]
    queue.end("b", 0)  # bob: 1 unit running, and served last; alice: 2 running
    assert (await queue.start())[0] == "b"


async def test_of_owners_running_as_many_the_one_served_least_recently_goes_first(
    queue: Queue,
) -> None:
    await queue.job("a", ALICE, 4)
    await queue.job("b", BOB, 4)
    first, second = await queue.start(), await queue.start()
    assert [first[0], second[0]] == ["a", "b"]  # none served yet: the oldest job first
    queue.end(*first)
    queue.end(*second)
    third = await queue.start()
    assert third[0] == "a"  # both run none; alice was served before bob
    queue.end(*third)
    assert (await queue.start())[0] == "b"  # both run none; bob now, though a is older


async def test_within_an_owner_jobs_go_first_in_first_out_unit_by_unit(queue: Queue) -> None:
    await queue.job("a1", ALICE, 2)
    await queue.job("a2", ALICE, 1)
    started = []
    for _ in range(3):
        job_id, unit_id = await queue.start()
        queue.end(job_id, unit_id)
        started.append((job_id, unit_id))
    assert started == [("a1", 0), ("a1", 1), ("a2", 0)]


async def test_one_worker_takes_turns_between_owners(queue: Queue) -> None:
    await queue.job("a", ALICE, 4)
    await queue.job("b", BOB, 2)
    await queue.job("c", CAROL, 3)
    assert await queue.one_worker(9) == ["a", "b", "c", "a", "b", "c", "a", "c", "a"]
    assert await queue.queue.next_unit(SPEC) is None


async def test_a_small_job_behind_another_owners_big_ones_gets_the_next_unit(
    queue: Queue,
) -> None:
    await queue.job("big1", ALICE, 5)
    await queue.job("big2", ALICE, 5)
    running = await queue.start()  # alice's unit runs; it is not pre-empted
    await queue.job("small", BOB, 1)
    assert queue.book["big1"].running  # bob's job waits for the unit boundary
    queue.end(*running)
    assert await queue.start() == ("small", 0)


async def test_jobs_with_no_owner_share_one_line_served_like_any_owner(queue: Queue) -> None:
    await queue.job("old1", None, 2)
    await queue.job("old2", None, 1)
    await queue.job("new", ALICE, 2)
    assert queue.queue.unfinished(None) == 2
    assert await queue.one_worker(5) == ["old1", "new", "old1", "new", "old2"]


async def test_a_job_paused_or_not_yet_planned_lets_its_owners_next_job_go(
    queue: Queue,
) -> None:
    paused = await queue.job("paused", ALICE, 2)
    await queue.job("next", ALICE, 1)
    await queue.queue.space.start(paused.job_id, queue.tmp, 0)  # waits for disk space
    assert await queue.start() == ("next", 0)
    queue.queue.space.cancel(paused.job_id)


async def test_a_finished_job_leaves_the_queue_and_an_owner_with_none_leaves_it_too(
    queue: Queue,
) -> None:
    run = await queue.job("a", ALICE, 2)
    await queue.start()
    assert queue.queue.unfinished(ALICE) == 1
    for unit_id in list(run.running):
        run.take_back(unit_id)
    queue.queue.drop(run)
    assert queue.queue.unfinished(ALICE) == 0
    assert queue.queue.lines.in_turn() == []
    assert await queue.queue.next_unit(SPEC) is None


async def test_a_running_count_follows_every_hand_out_and_take_back(queue: Queue) -> None:
    run = await queue.job("a", ALICE, 3)
    await queue.start()
    await queue.start()
    (line,) = queue.queue.lines.in_turn()
    assert line.running == 2
    run.take_back(0)
    run.take_back(0)  # a second take-back of the same unit counts nothing
    assert line.running == 1


async def test_queue_positions_follow_the_fair_rule(queue: Queue) -> None:
    await queue.job("a-running", ALICE, 3)
    await queue.start()  # alice runs a unit: her job is running, the others queued
    await queue.book.set_state(queue.book["a-running"], JobState.RUNNING)
    await queue.job("a-next", ALICE, 1)
    await queue.job("a-last", ALICE, 1)
    await queue.job("b", BOB, 1)
    await queue.job("c", CAROL, 1)
    assert queue.queue.positions() == {"b": 1, "c": 2, "a-next": 3, "a-last": 4}


async def test_units_wait_for_a_pilot_counts_every_owners_waiting_units(queue: Queue) -> None:
    await queue.job("a", ALICE, 3)
    await queue.job("b", BOB, 2)
    await queue.start()
    assert await queue.queue.all_waiting() == 4  # what the Slurm launcher is told
