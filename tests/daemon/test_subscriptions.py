"""Who may follow which events: the gate's decisions, topic by topic, and the owner
lookup through the progress log (tests/daemon/test_publisher.py runs it on a socket)."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnuc.daemon.caller import Caller, CallerSeal
from virnuc.daemon.progress.log import NewJob, ProgressLog
from virnuc.daemon.subscriptions import (
    MAX_TOPIC,
    SubscriptionGate,
    SubscriptionRequest,
    job_of,
    owners_in,
)
from virnuc.pipeline.spec import ModelSpec

ALICE = Caller("uid:1001", 1001, 1001, admin=False, label="alice (uid 1001)")
BOB = Caller("uid:1002", 1002, 1002, admin=False, label="bob (uid 1002)")
ROOT = Caller("uid:0", 0, 0, admin=True, label="root (uid 0)")
SPEC = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300, "demo")


def subscribe(caller: Caller | None, topic: str) -> SubscriptionRequest:
    return SubscriptionRequest(True, topic.encode(), caller)


class Owners:
    """An owner lookup that counts how often it is asked."""

    def __init__(self, owners: dict[str, str | None]):
        self.owners = owners
        self.asked: list[str] = []

    async def __call__(self, job_id: str) -> str | None:
        self.asked.append(job_id)
        return self.owners.get(job_id)


@pytest.mark.parametrize(
    ("topic", "job_id"),
    [
        ("job.a1.", "a1"),
        ("job.a1.progress", "a1"),
        ("job.a1.st", "a1"),
        ("job.a1", None),  # also a prefix of job.a10.*
        ("job.", None),
        ("job..", None),
        ("j", None),
        ("", None),
        ("worker.w0.state", None),
        ("daemon.state", None),
    ],
)
def test_only_a_prefix_ending_the_job_id_names_one_job(topic: str, job_id: str | None) -> None:
    assert job_of(topic.encode()) == job_id


@pytest.mark.parametrize(
    "topic", ["", "j", "job.", "job.a", "worker.", "worker.w0.state", "daemon.", "d"]
)
def test_a_member_may_not_subscribe_to_prefixes_spanning_others_events(topic: str) -> None:
    gate = SubscriptionGate(CallerSeal(), Owners({}))
    assert gate.check(subscribe(ALICE, topic)) is False
    assert gate.check(subscribe(ROOT, topic)) is True


@pytest.mark.parametrize("topic", ["daemon.state", "daemon.stateful"])
def test_everyone_may_follow_the_daemons_state(topic: str) -> None:
    gate = SubscriptionGate(CallerSeal(), Owners({}))
    assert gate.check(subscribe(ALICE, topic)) is True


def test_no_caller_may_subscribe_to_anything_but_may_always_unsubscribe() -> None:
    gate = SubscriptionGate(CallerSeal(), Owners({"a1": ALICE.owner}))
    for topic in ("", "daemon.state", "job.a1."):
        assert gate.check(subscribe(None, topic)) is False
    assert gate.check(SubscriptionRequest(False, b"", None)) is True


def test_an_overlong_topic_is_refused_even_to_an_admin() -> None:
    gate = SubscriptionGate(CallerSeal(), Owners({}))
    assert gate.check(subscribe(ROOT, "daemon.state" + "x" * MAX_TOPIC)) is False


def test_a_subscription_without_a_caller_is_refused_even_for_daemon_state() -> None:
    gate = SubscriptionGate(CallerSeal(), None)
    assert gate.check(subscribe(None, "daemon.state")) is False


@pytest.mark.asyncio
async def test_a_job_is_followed_by_its_owner_and_admins_and_its_owner_is_asked_once() -> None:
    owners = Owners({"a1": ALICE.owner, "old": None})
    gate = SubscriptionGate(CallerSeal(), owners)
    assert gate.check(subscribe(ALICE, "job.a1.")) == "a1"
    assert await gate.may_follow_job(ALICE, "a1") is True
    assert gate.check(subscribe(ALICE, "job.a1.state")) is True  # remembered
    assert gate.check(subscribe(BOB, "job.a1.")) is False
    assert gate.check(subscribe(ROOT, "job.a1.")) is True
    assert owners.asked == ["a1"]
    assert await gate.may_follow_job(ALICE, "old") is False  # recorded no owner
    assert await gate.may_follow_job(ALICE, "nope") is False  # no such job


@pytest.mark.asyncio
async def test_without_an_owner_lookup_only_admins_follow_jobs() -> None:
    gate = SubscriptionGate(CallerSeal(), None)
    assert gate.check(subscribe(ALICE, "job.a1.")) is False
    assert await gate.may_follow_job(ALICE, "a1") is False


@pytest.mark.asyncio
async def test_a_failed_owner_lookup_refuses() -> None:
    async def broken(job_id: str) -> str | None:
        raise OSError("database is locked")

    gate = SubscriptionGate(CallerSeal(), broken)
    assert await gate.may_follow_job(ALICE, "a1") is False


@pytest.mark.asyncio
async def test_owners_are_looked_up_in_the_progress_log(tmp_path: Path) -> None:
    async with await ProgressLog.open(tmp_path / "state.db") as log:
        await log.create_job(NewJob("a1", "/in/x.fa", "/out/a1", SPEC, 2, owner=ALICE.owner))
        await log.create_job(NewJob("old", "/in/x.fa", "/out/old", SPEC, 2))
        owner_of = owners_in(log)
        assert await owner_of("a1") == ALICE.owner
        assert await owner_of("old") is None
        assert await owner_of("nope") is None
