"""Dispatch maps every failure to its documented error code (the ones e2e cannot cause), and
the authorisation matrix: what the owner of a job, another user and an admin may do."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from virnuc.daemon import handlers
from virnuc.daemon import scheduler_messages as sm
from virnuc.daemon.actor import Stopping
from virnuc.daemon.caller import Caller
from virnuc.daemon.config import DaemonConfig
from virnuc.daemon.jobs.submission import CheckedSubmission
from virnuc.pipeline.spec import ModelSpec
from virnuc.protocol import (
    KillArgs,
    ListArgs,
    Op,
    PingArgs,
    Request,
    ShutdownArgs,
    StatusArgs,
    SubmitArgs,
    WorkersArgs,
)

ROOT = Caller("uid:0", 0, 0, True, "root (uid 0)")


def context(accepting: bool = True) -> handlers.DaemonContext:
    scheduler = SimpleNamespace(accepting=accepting, workers={})
    return handlers.DaemonContext(DaemonConfig(), None, scheduler, lambda reason: None)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_submit_while_stopping_answers_stopping() -> None:
    request = Request.new(SubmitArgs(input="/in.fa", output="/out"))
    reply = await handlers.dispatch(context(accepting=False), request, ROOT)
    assert reply["ok"] is False
    assert reply["error"]["code"] == "stopping"


@pytest.mark.asyncio
async def test_an_actor_stopping_midway_answers_stopping(monkeypatch) -> None:
    async def stopped(ctx, args, caller):
        raise Stopping("scheduler is stopping")

    monkeypatch.setitem(handlers.HANDLERS, Op.PING, stopped)
    reply = await handlers.dispatch(context(), Request.new(PingArgs()), ROOT)
    assert reply["error"]["code"] == "stopping"


@pytest.mark.asyncio
async def test_an_unexpected_exception_answers_internal_and_says_where_to_look(monkeypatch) -> None:
    async def broken(ctx, args, caller):
        raise KeyError("bug")

    monkeypatch.setitem(handlers.HANDLERS, Op.PING, broken)
    reply = await handlers.dispatch(context(), Request.new(PingArgs()), ROOT)
    assert reply["error"] == {"code": "internal", "message": "internal error; see the virnucd log"}


# --- the authorisation matrix: owner, another user, admin ----------------------------------

ALICE = Caller("uid:1001", 1001, 1001, False, "alice (uid 1001, pid 11)", 11)
BOB = Caller("uid:1002", 1002, 1002, False, "bob (uid 1002, pid 12)", 12)
ADMIN = Caller("uid:0", 0, 0, True, "root (uid 0, pid 13)", 13)


def row(job_id: str, owner: str | None) -> SimpleNamespace:
    return SimpleNamespace(job_id=job_id, owner=owner)


class FakeProgress:
    """The stored jobs: alice's, bob's, and one from before owners were recorded."""

    def __init__(self) -> None:
        self.jobs = {j.job_id: j for j in (row("a1", ALICE.owner), row("b1", BOB.owner))}
        self.jobs["old"] = row("old", None)

    async def get_job(self, job_id: str) -> SimpleNamespace | None:
        return self.jobs.get(job_id)

    async def list_jobs(self, offset: int, limit: int, owner: str | None) -> list[SimpleNamespace]:
        mine = [j for j in self.jobs.values() if owner is None or j.owner == owner]
        return mine[offset : offset + limit]

    async def count_jobs(self, owner: str | None) -> int:
        return len(await self.list_jobs(0, 10**6, owner))


class FakeScheduler:
    """Takes SubmitJob and KillJob; one worker, busy on alice's job a1."""

    accepting = True

    def __init__(self, progress: FakeProgress) -> None:
        self.progress = progress
        self.told: list[Any] = []
        busy = {"id": "w0", "pid": 99, "device": "cpu", "state": "busy", "job_id": "a1", "unit": 3}
        self.workers = {"w0": SimpleNamespace(info=lambda: dict(busy))}
        self.book = SimpleNamespace(
            status_of=lambda r: {"job_id": r.job_id},
            statuses_of=lambda rows: [{"job_id": r.job_id} for r in rows],
            get=lambda job_id: (
                SimpleNamespace(row=progress.jobs[job_id]) if job_id in progress.jobs else None
            ),
            busy_outputs=lambda: set(),
        )

    async def tell(self, message: Any) -> None:
        self.told.append(message)
        if isinstance(message, sm.SubmitJob):
            job = message.job
            message.reply.set_result(
                SimpleNamespace(
                    **vars(row(job.job_id, job.owner)), inputs=job.inputs, output=job.output
                )
            )
        else:
            message.reply.set_result({"job_id": message.job_id, "state": "killed"})


def matrix_context() -> tuple[handlers.DaemonContext, FakeScheduler, list[str]]:
    progress = FakeProgress()
    scheduler = FakeScheduler(progress)
    stops: list[str] = []
    ctx = handlers.DaemonContext(DaemonConfig(), progress, scheduler, stops.append)  # type: ignore[arg-type]
    return ctx, scheduler, stops


async def call(ctx: handlers.DaemonContext, args: Any, caller: Caller) -> dict[str, Any]:
    return await handlers.dispatch(ctx, Request.new(args), caller)


@pytest.mark.asyncio
@pytest.mark.parametrize("caller", [ALICE, BOB, ADMIN], ids=["owner", "other", "admin"])
async def test_everyone_may_ping(caller: Caller) -> None:
    ctx, _, _ = matrix_context()
    assert (await call(ctx, PingArgs(), caller))["ok"]


@pytest.mark.asyncio
@pytest.mark.parametrize("caller", [ALICE, BOB, ADMIN], ids=["owner", "other", "admin"])
async def test_a_submitted_job_records_its_callers_owner(caller: Caller, monkeypatch) -> None:
    spec = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300)
    checked = CheckedSubmission(spec, output_identity="1:2", input_fingerprint="fp")
    monkeypatch.setattr(handlers, "check_submission", lambda *args, **kwargs: checked)
    ctx, scheduler, _ = matrix_context()
    with capture_logs() as logs:
        reply = await call(ctx, SubmitArgs(input="/in.fa", output="/out"), caller)
    assert reply["ok"], reply
    (submitted,) = scheduler.told
    assert submitted.job.owner == caller.owner
    (event,) = [e for e in logs if e["event"] == "job.submitted"]
    assert (event["caller"], event["owner"]) == (caller.label, caller.owner)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("caller", "visible"),
    [(ALICE, {"a1"}), (BOB, {"b1"}), (ADMIN, {"a1", "b1", "old"})],
    ids=["owner", "other", "admin"],
)
async def test_status_of_a_job_one_may_not_see_is_not_found_like_a_missing_one(
    caller: Caller, visible: set[str]
) -> None:
    ctx, _, _ = matrix_context()
    for job_id in ("a1", "b1", "old", "nope"):
        reply = await call(ctx, StatusArgs(job_id=job_id), caller)
        if job_id in visible:
            assert reply["result"] == {"job_id": job_id}
        else:
            assert reply["error"] == {"code": "not_found", "message": f"no job {job_id!r}"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("caller", "listed"),
    [(ALICE, ["a1"]), (BOB, ["b1"]), (ADMIN, ["a1", "b1", "old"])],
    ids=["owner", "other", "admin"],
)
async def test_list_shows_the_callers_jobs_and_counts_only_those(
    caller: Caller, listed: list[str]
) -> None:
    ctx, _, _ = matrix_context()
    result = (await call(ctx, ListArgs(), caller))["result"]
    assert [job["job_id"] for job in result["jobs"]] == listed
    assert result["total"] == len(listed)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("caller", "may_kill"),
    [(ALICE, True), (BOB, False), (ADMIN, True)],
    ids=["owner", "other", "admin"],
)
async def test_only_the_owner_or_an_admin_may_kill_a_job(caller: Caller, may_kill: bool) -> None:
    ctx, scheduler, _ = matrix_context()
    with capture_logs() as logs:
        reply = await call(ctx, KillArgs(job_id="a1"), caller)
    if may_kill:
        assert reply["result"] == {"job_id": "a1", "state": "killed"}
        assert [m.job_id for m in scheduler.told] == ["a1"]
        event = next(e for e in logs if e["event"] == "job.kill_requested")
    else:
        assert reply["error"] == {"code": "not_found", "message": "no job 'a1'"}
        assert scheduler.told == []  # the scheduler never heard of it
        event = next(e for e in logs if e["event"] == "request.refused")
    assert (event["caller"], event["owner"]) == (caller.label, caller.owner)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("caller", "sees_job"),
    [(ALICE, True), (BOB, False), (ADMIN, True)],
    ids=["owner", "other", "admin"],
)
async def test_workers_hide_the_job_of_another_owner(caller: Caller, sees_job: bool) -> None:
    ctx, _, _ = matrix_context()
    (worker,) = (await call(ctx, WorkersArgs(), caller))["result"]["workers"]
    assert (worker["state"], worker["device"], worker["pid"]) == ("busy", "cpu", 99)
    if sees_job:
        assert (worker["job_id"], worker["unit"]) == ("a1", 3)
    else:
        assert "job_id" not in worker
        assert "unit" not in worker


@pytest.mark.asyncio
@pytest.mark.parametrize("caller", [ALICE, BOB], ids=["owner", "other"])
async def test_only_an_admin_may_stop_virnucd(caller: Caller) -> None:
    ctx, _, stops = matrix_context()
    with capture_logs() as logs:
        refused = await call(ctx, ShutdownArgs(), caller)
    assert refused["error"]["code"] == "forbidden"
    assert refused["error"]["message"].startswith("only an admin may stop virnucd (root, ")
    assert stops == []
    (event,) = [e for e in logs if e["event"] == "request.refused"]
    assert (event["op"], event["caller"], event["owner"]) == (
        "shutdown",
        caller.label,
        caller.owner,
    )
    assert (await call(ctx, ShutdownArgs(), ADMIN))["ok"]
    assert stops == [f"shutdown requested by {ADMIN.label}"]


@pytest.mark.asyncio
async def test_refusals_are_logged_once_per_caller_and_interval_so_floods_cannot_fill_the_log() -> (
    None
):
    ctx, _, _ = matrix_context()
    with capture_logs() as logs:
        for _ in range(50):
            await call(ctx, ShutdownArgs(), BOB)
        await call(ctx, ShutdownArgs(), ALICE)
    refused = [e for e in logs if e["event"] == "request.refused"]
    assert [e["caller"] for e in refused] == [BOB.label, ALICE.label]
