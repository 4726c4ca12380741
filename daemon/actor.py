"""The actor shape every part of the daemon follows.

An actor is one asyncio task with a bounded inbox and a `run()` in three phases:
`setup()`, a loop that handles one message at a time, and `teardown()`. Nothing else
touches its state, so there are no locks. A message that expects an answer carries a
future; whatever is still queued when the actor stops is answered with `Stopping`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Generic, TypeVar

import structlog

M = TypeVar("M")

log = structlog.get_logger()


class Stopping(Exception):
    """Set on the futures of messages an actor will never handle because it stopped."""


_STOP = object()


class Actor(Generic[M]):
    name = "actor"

    def __init__(self, inbox_size: int = 1000):
        self.inbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=inbox_size)
        self._task: asyncio.Task[None] | None = None
        self._set_up = asyncio.Event()

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name=self.name)
        return self._task

    async def started(self) -> None:
        """Wait until `setup()` is done; raises what it raised if it failed."""
        assert self._task is not None
        set_up = asyncio.create_task(self._set_up.wait())
        await asyncio.wait({set_up, self._task}, return_when=asyncio.FIRST_COMPLETED)
        set_up.cancel()
        if not self._set_up.is_set():
            await self._task  # raises the setup's exception
            raise Stopping(f"{self.name} stopped before it started")

    async def tell(self, message: M) -> None:
        """Queue a message, waiting while the inbox is full (backpressure). An actor
        that ended answers nothing: telling it raises `Stopping` instead of hanging."""
        if self._task is not None and self._task.done():
            raise Stopping(f"{self.name} is not running")
        await self.inbox.put(message)

    async def stop(self) -> None:
        """Ask the loop to finish after the messages already queued, and wait for it."""
        if self._task is None or self._task.done():
            return
        await self.inbox.put(_STOP)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def run(self) -> None:
        try:
            await self.setup()
            self._set_up.set()
            while (message := await self.inbox.get()) is not _STOP:
                try:
                    await self.handle(message)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("actor.handler_failed", actor=self.name, message=repr(message))
        finally:
            self._refuse_queued()
            await asyncio.shield(self.teardown())

    async def setup(self) -> None:
        """Open what the loop needs."""

    async def handle(self, message: M) -> None:
        raise NotImplementedError

    async def teardown(self) -> None:
        """Close what setup opened."""

    def _refuse_queued(self) -> None:
        while not self.inbox.empty():
            message = self.inbox.get_nowait()
            future = getattr(message, "reply", None)
            if isinstance(future, asyncio.Future) and not future.done():
                future.set_exception(Stopping(f"{self.name} is stopping"))
