"""The event publisher: one PUB socket, fed through a bounded inbox.

Publishing never blocks the caller's work: when subscribers are slow, PUB drops
messages (ZeroMQ's high-water mark), and when the inbox itself is full the event is
dropped here too. Events are progress hints; `status` is the truth.
"""

from __future__ import annotations

import asyncio

import structlog
import zmq
import zmq.asyncio

from .actor import Actor

log = structlog.get_logger()


class EventPublisher(Actor[list[bytes]]):
    name = "events"

    def __init__(self, context: zmq.asyncio.Context, endpoint: str):
        super().__init__(inbox_size=10_000)
        self.context = context
        self.endpoint = endpoint
        self.dropped = 0
        self._socket: zmq.asyncio.Socket | None = None

    async def setup(self) -> None:
        socket = self.context.socket(zmq.PUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, 10_000)
        socket.bind(self.endpoint)
        self._socket = socket

    def publish(self, frames: list[bytes]) -> None:
        """Queue an event; drop it (and count) if the inbox is full."""
        try:
            self.inbox.put_nowait(frames)
        except asyncio.QueueFull:
            self.dropped += 1

    async def handle(self, message: list[bytes]) -> None:
        assert self._socket is not None
        await self._socket.send_multipart(message)

    async def teardown(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
