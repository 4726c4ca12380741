"""One handler per control operation, and the dispatch that maps failures to error codes.

Each handler documents its wire form and its CLI form. Handlers receive arguments
already validated by `virnuc.protocol` and judge only their meaning, and the
authenticated `Caller` (daemon/caller.py), whose rights daemon/authz.py spells out.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from virnuc.disk_space import is_no_space
from virnuc.protocol import (
    ErrorCode,
    KillArgs,
    ListArgs,
    Op,
    OpArgs,
    Request,
    StatusArgs,
    SubmitArgs,
    WorkerInfo,
    error_reply,
    ok_reply,
)

from . import authz
from . import scheduler_messages as sm
from .actor import Stopping
from .caller import Caller
from .config import DaemonConfig
from .jobs.scheduler import JobFinished, JobNotFound, Scheduler
from .jobs.submission import SubmitRefused, check_submission
from .progress.log import JobRow, NewJob, ProgressLog
from .rate_limit import RateLimitedWarning

log = structlog.get_logger()

LIST_PAGE_MAX = 1000  # bounded work per request; clients page with offset/limit


@dataclass
class DaemonContext:
    """What handlers may use; built once by `virnuc.daemon.main`."""

    config: DaemonConfig
    progress: ProgressLog
    scheduler: Scheduler
    request_shutdown: Callable[[str], None]
    # Refused changes are logged once per caller, op and interval: a client flooding
    # bad submits cannot fill the log, and each caller's refusals still show.
    refusals: RateLimitedWarning = field(default_factory=RateLimitedWarning)


class HandlerError(Exception):
    """Raised by a handler to answer with a specific error code."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


async def ping(ctx: DaemonContext, args: OpArgs, caller: Caller) -> dict[str, Any]:
    """`ping` -> `{}`. Proves the event loop answers. (CLI: none; used by `predict`.)"""
    return {}


async def submit(ctx: DaemonContext, args: OpArgs, caller: Caller) -> dict[str, Any]:
    """`submit {input | inputs, output, ...}` -> `{job_id}`. (CLI: `virnucctl submit`.)

    The inputs and the output are judged with the caller's file rights, on the very
    files and directory opened (daemon/jobs/caller_files.py)."""
    assert isinstance(args, SubmitArgs)
    if not ctx.scheduler.accepting:
        raise HandlerError(
            ErrorCode.STOPPING, "virnucd is shutting down; submit again after restart"
        )
    # The checks touch the filesystem (a slow mount must not stall ping or the watchdog),
    # so they run in a thread; the scheduler, which creates the job, checks once more
    # that no other job took the output directory meanwhile.
    busy = ctx.scheduler.book.busy_outputs()
    checked = await asyncio.to_thread(check_submission, args, ctx.config, busy, caller)
    job = NewJob(
        job_id=secrets.token_hex(4),
        input=args.paths[0],
        inputs=args.paths,
        output=args.output,
        spec=checked.spec,
        checkpoint_every=args.checkpoint_every or ctx.config.checkpoint_every,
        save_embeddings=args.save_embeddings,
        force=args.force,
        owner=caller.owner,
        output_identity=checked.output_identity,
        input_fingerprint=checked.input_fingerprint,
        model_set=checked.model_set,
    )
    reply: asyncio.Future[JobRow] = asyncio.get_running_loop().create_future()
    await ctx.scheduler.tell(sm.SubmitJob(job, reply))
    row = await reply
    log.info(
        "job.submitted",
        job_id=row.job_id,
        inputs=list(row.inputs),
        output=row.output,
        caller=caller.label,
        owner=caller.owner,
        model_set=job.model_set,
    )
    return {"job_id": row.job_id}


async def status(ctx: DaemonContext, args: OpArgs, caller: Caller) -> dict[str, Any]:
    """`status {job_id}` -> JobStatus. (CLI: `virnucctl status JOB`, `wait JOB`.)"""
    assert isinstance(args, StatusArgs)
    row = await visible_job(ctx, args.job_id, caller)
    return dict(ctx.scheduler.book.status_of(row))


async def visible_job(ctx: DaemonContext, job_id: str, caller: Caller) -> JobRow:
    """The job, if it exists and `caller` may see it; else the same `not_found` either
    way, so another owner's job ids cannot be probed."""
    row = await ctx.progress.get_job(job_id)
    if row is None or not caller.may_see(row.owner):
        raise HandlerError(ErrorCode.NOT_FOUND, f"no job {job_id!r}")
    return row


async def list_jobs(ctx: DaemonContext, args: OpArgs, caller: Caller) -> dict[str, Any]:
    """`list {offset?, limit?}` -> `{jobs, total}`: the caller's jobs (an admin's: all),
    oldest first, at most 1000 a page.

    (CLI: `virnucctl list`, `status` without JOB; both page through every job.)
    """
    assert isinstance(args, ListArgs)
    limit = min(args.limit or LIST_PAGE_MAX, LIST_PAGE_MAX)
    owner = authz.owner_filter(caller)
    rows = await ctx.progress.list_jobs(offset=args.offset, limit=limit, owner=owner)
    total = await ctx.progress.count_jobs(owner=owner)
    return {"jobs": ctx.scheduler.book.statuses_of(rows), "total": total}


async def kill(ctx: DaemonContext, args: OpArgs, caller: Caller) -> dict[str, Any]:
    """`kill {job_id}` -> `{job_id, state}`. (CLI: `virnucctl kill JOB`.)"""
    assert isinstance(args, KillArgs)
    await visible_job(ctx, args.job_id, caller)  # a job's owner never changes
    log.info("job.kill_requested", job_id=args.job_id, caller=caller.label, owner=caller.owner)
    reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    await ctx.scheduler.tell(sm.KillJob(args.job_id, reply))
    try:
        return await reply
    except JobNotFound:
        raise HandlerError(ErrorCode.NOT_FOUND, f"no job {args.job_id!r}") from None
    except JobFinished as exc:
        raise HandlerError(ErrorCode.CONFLICT, f"job {args.job_id} already {exc}") from None


async def workers(ctx: DaemonContext, args: OpArgs, caller: Caller) -> dict[str, Any]:
    """`workers` -> `{workers: [WorkerInfo]}`; a busy slot's job_id and unit only for a
    job the caller may see. (CLI: `virnucctl workers`.)"""
    infos = [s.info() for s in ctx.scheduler.workers.values()]
    return {"workers": [authz.worker_view(i, caller, job_owner(ctx, i)) for i in infos]}


def job_owner(ctx: DaemonContext, info: WorkerInfo) -> str | None:
    run = ctx.scheduler.book.get(info.get("job_id"))  # a busy worker's job is unfinished
    return run.row.owner if run is not None else None


async def shutdown(ctx: DaemonContext, args: OpArgs, caller: Caller) -> dict[str, Any]:
    """`shutdown` -> `{}`, then a two-stage stop (workers checkpoint, then exit); admins
    only. (CLI: none; `virnucctl predict` stops its private virnucd so, and SIGTERM is
    the same.)"""
    if not caller.admin:
        raise HandlerError(ErrorCode.FORBIDDEN, authz.shutdown_forbidden(ctx.config.admin_group))
    log.info("daemon.shutdown_requested", caller=caller.label, owner=caller.owner)
    ctx.request_shutdown(f"shutdown requested by {caller.label}")
    return {}


Handler = Callable[[DaemonContext, OpArgs, Caller], Awaitable[dict[str, Any]]]
HANDLERS: dict[Op, Handler] = {
    Op.PING: ping,
    Op.SUBMIT: submit,
    Op.STATUS: status,
    Op.LIST: list_jobs,
    Op.KILL: kill,
    Op.WORKERS: workers,
    Op.SHUTDOWN: shutdown,
}


MUTATING = frozenset({Op.SUBMIT, Op.KILL, Op.SHUTDOWN})  # their refusals are logged too


async def dispatch(ctx: DaemonContext, request: Request, caller: Caller) -> dict[str, Any]:
    """Run the request's handler; every failure becomes an error reply, never a crash."""
    try:
        return ok_reply(request.id, await HANDLERS[request.op](ctx, request.args, caller))
    except (HandlerError, SubmitRefused) as exc:
        if request.op in MUTATING:
            ctx.refusals(
                "request.refused",
                key=f"{caller.owner}:{request.op}",
                op=request.op,
                code=exc.code,
                reason=exc.message,
                caller=caller.label,
                owner=caller.owner,
            )
        return error_reply(request.id, exc.code, exc.message)
    except Stopping:
        return error_reply(request.id, ErrorCode.STOPPING, "virnucd is shutting down")
    except Exception as exc:
        if is_no_space(exc):  # SQLite could not record the job (the free-space check raced)
            message = f"the state disk is full: {exc}; free some space and submit again"
            return error_reply(request.id, ErrorCode.NO_SPACE, message)
        log.exception("request.failed", op=request.op, request_id=request.id, caller=caller.label)
        return error_reply(request.id, ErrorCode.INTERNAL, "internal error; see the virnucd log")
