"""The actor shape: a dead actor answers, it never leaves a caller waiting."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from virnuc.daemon.actor import Actor, Stopping

pytestmark = pytest.mark.asyncio


@dataclass
class Ask:
    reply: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Broken(Actor[Ask]):
    name = "broken"

    def __init__(self, fail_setup: bool) -> None:
        super().__init__()
        self.fail_setup = fail_setup

    async def setup(self) -> None:
        if self.fail_setup:
            raise RuntimeError("database disk image is malformed")

    async def handle(self, message: Ask) -> None:
        message.reply.set_result("answered")


async def test_started_raises_what_setup_raised() -> None:
    actor = Broken(fail_setup=True)
    actor.start()
    with pytest.raises(RuntimeError, match="malformed"):
        await asyncio.wait_for(actor.started(), 5)


async def test_a_message_queued_before_setup_failed_is_refused_not_left_waiting() -> None:
    actor = Broken(fail_setup=True)
    early = Ask()
    await actor.tell(early)  # queued before the task even ran
    task = actor.start()
    with pytest.raises(Stopping):
        await asyncio.wait_for(early.reply, 5)
    await asyncio.gather(task, return_exceptions=True)  # virnucd's watch reads it too


async def test_telling_an_actor_that_ended_raises_stopping() -> None:
    actor = Broken(fail_setup=True)
    task = actor.start()
    await asyncio.gather(task, return_exceptions=True)
    with pytest.raises(Stopping):
        await actor.tell(Ask())


async def test_a_healthy_actor_answers_after_it_started() -> None:
    actor = Broken(fail_setup=False)
    actor.start()
    await asyncio.wait_for(actor.started(), 5)
    ask = Ask()
    await actor.tell(ask)
    assert await asyncio.wait_for(ask.reply, 5) == "answered"
    await actor.stop()
    with pytest.raises(Stopping):
        await actor.tell(Ask())
