"""One handler per control operation, and the dispatch that maps failures to error codes.

Each handler documents its wire form and its CLI form. Handlers receive arguments
already validated by `virnuc.protocol` and judge only their meaning.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
    error_reply,
    ok_reply,
)

from . import scheduler_messages as sm
from .actor import Stopping
from .caller import Caller
from .config import DaemonConfig
from .jobs.scheduler import JobFinished, JobNotFound, Scheduler
from .jobs.submission import SubmitRefused, check_submission
from .progress.log import JobRow, NewJob, ProgressLog

log = structlog.get_logger()

LIST_PAGE_MAX = 1000  # bounded work per request; clients page with offset/limit


@dataclass
class DaemonContext:
    """What handlers may use; built once by `virnuc.daemon.main`."""

    config: DaemonConfig
    progress: ProgressLog
    scheduler: Scheduler
    request_shutdown: Callable[[str], None]


class HandlerError(Exception):
    """Raised by a handler to answer with a specific error code."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


async def ping(ctx: DaemonContext, args: OpArgs) -> dict[str, Any]:
    """`ping` -> `{}`. Proves the event loop answers. (CLI: none; used by `predict`.)"""
    return {}


async def submit(ctx: DaemonContext, args: OpArgs, caller: Caller | None = None) -> dict[str, Any]:
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
        owner=None if caller is None else caller.owner,
        output_identity=checked.output_identity,
        input_fingerprint=checked.input_fingerprint,
    )
    reply: asyncio.Future[JobRow] = asyncio.get_running_loop().create_future()
    await ctx.scheduler.tell(sm.SubmitJob(job, reply))
    row = await reply
    log.info("job.submitted", job_id=row.job_id, inputs=list(row.inputs), output=row.output)
    return {"job_id": row.job_id}


async def status(ctx: DaemonContext, args: OpArgs) -> dict[str, Any]:
    """`status {job_id}` -> JobStatus. (CLI: `virnucctl status JOB`, `wait JOB`.)"""
    assert isinstance(args, StatusArgs)
    row = await ctx.progress.get_job(args.job_id)
    if row is None:
        raise HandlerError(ErrorCode.NOT_FOUND, f"no job {args.job_id!r}")
    return dict(ctx.scheduler.book.status_of(row))


async def list_jobs(ctx: DaemonContext, args: OpArgs) -> dict[str, Any]:
    """`list {offset?, limit?}` -> `{jobs, total}`, oldest first, at most 1000 a page.

    (CLI: `virnucctl list`, `status` without JOB; both page through every job.)
    """
    assert isinstance(args, ListArgs)
    limit = min(args.limit or LIST_PAGE_MAX, LIST_PAGE_MAX)
    rows = await ctx.progress.list_jobs(offset=args.offset, limit=limit)
    total = await ctx.progress.count_jobs()
    return {"jobs": [ctx.scheduler.book.status_of(row) for row in rows], "total": total}


async def kill(ctx: DaemonContext, args: OpArgs) -> dict[str, Any]:
    """`kill {job_id}` -> `{job_id, state}`. (CLI: `virnucctl kill JOB`.)"""
    assert isinstance(args, KillArgs)
    reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    await ctx.scheduler.tell(sm.KillJob(args.job_id, reply))
    try:
        return await reply
    except JobNotFound:
        raise HandlerError(ErrorCode.NOT_FOUND, f"no job {args.job_id!r}") from None
    except JobFinished as exc:
        raise HandlerError(ErrorCode.CONFLICT, f"job {args.job_id} already {exc}") from None


async def workers(ctx: DaemonContext, args: OpArgs) -> dict[str, Any]:
    """`workers` -> `{workers: [WorkerInfo]}`. (CLI: `virnucctl workers`.)"""
    return {"workers": [s.info() for s in ctx.scheduler.workers.values()]}


async def shutdown(ctx: DaemonContext, args: OpArgs) -> dict[str, Any]:
    """`shutdown` -> `{}`, then a two-stage stop (workers checkpoint, then exit).

    (CLI: none; `virnucctl predict` stops its private virnucd so, and SIGTERM is the same.)
    """
    ctx.request_shutdown("shutdown requested by a client")
    return {}


HANDLERS: dict[Op, Callable[[DaemonContext, OpArgs], Awaitable[dict[str, Any]]]] = {
    Op.PING: ping,
    Op.SUBMIT: submit,
    Op.STATUS: status,
    Op.LIST: list_jobs,
    Op.KILL: kill,
    Op.WORKERS: workers,
    Op.SHUTDOWN: shutdown,
}


async def dispatch(ctx: DaemonContext, request: Request) -> dict[str, Any]:
    """Run the request's handler; every failure becomes an error reply, never a crash."""
    try:
        return ok_reply(request.id, await HANDLERS[request.op](ctx, request.args))
    except (HandlerError, SubmitRefused) as exc:
        return error_reply(request.id, exc.code, exc.message)
    except Stopping:
        return error_reply(request.id, ErrorCode.STOPPING, "virnucd is shutting down")
    except Exception as exc:
        if is_no_space(exc):  # SQLite could not record the job (the free-space check raced)
            message = f"the state disk is full: {exc}; free some space and submit again"
            return error_reply(request.id, ErrorCode.NO_SPACE, message)
        log.exception("request.failed", op=request.op, request_id=request.id)
        return error_reply(request.id, ErrorCode.INTERNAL, "internal error; see the virnucd log")
