"""Dispatch maps every failure to its documented error code (the ones e2e cannot cause)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from virnuc.daemon import handlers
from virnuc.daemon.actor import Stopping
from virnuc.daemon.config import DaemonConfig
from virnuc.protocol import Op, PingArgs, Request, SubmitArgs


def context(accepting: bool = True) -> handlers.DaemonContext:
    scheduler = SimpleNamespace(accepting=accepting, workers={})
    return handlers.DaemonContext(DaemonConfig(), None, scheduler, lambda reason: None)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_submit_while_stopping_answers_stopping() -> None:
    request = Request.new(SubmitArgs(input="/in.fa", output="/out"))
    reply = await handlers.dispatch(context(accepting=False), request)
    assert reply["ok"] is False
    assert reply["error"]["code"] == "stopping"


@pytest.mark.asyncio
async def test_an_actor_stopping_midway_answers_stopping(monkeypatch) -> None:
    async def stopped(ctx, args):
        raise Stopping("scheduler is stopping")

    monkeypatch.setitem(handlers.HANDLERS, Op.PING, stopped)
    reply = await handlers.dispatch(context(), Request.new(PingArgs()))
    assert reply["error"]["code"] == "stopping"


@pytest.mark.asyncio
async def test_an_unexpected_exception_answers_internal_and_says_where_to_look(monkeypatch) -> None:
    async def broken(ctx, args):
        raise KeyError("bug")

    monkeypatch.setitem(handlers.HANDLERS, Op.PING, broken)
    reply = await handlers.dispatch(context(), Request.new(PingArgs()))
    assert reply["error"] == {"code": "internal", "message": "internal error; see the virnucd log"}
