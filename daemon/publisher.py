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

from .access import Listener
from .actor import Actor
from .caller import CallerSeal

log = structlog.get_logger()


class EventPublisher(Actor[list[bytes]]):
    name = "events"

    def __init__(
        self,
        context: zmq.asyncio.Context,
        endpoint: str,
        listener: Listener | None = None,
        *,
        seal: CallerSeal | None = None,
    ):
        super().__init__(inbox_size=10_000)
        self.context = context
        self.endpoint = endpoint
        self.listener = listener or Listener()
        self.seal = seal  # reads the subscribers' sealed Callers (daemon/zap.py)
        self.dropped = 0
        self._socket: zmq.asyncio.Socket | None = None

    def bind(self) -> None:
        """Listen now, synchronously; raises `AccessError` if it cannot (see ControlServer)."""
        socket = self.context.socket(zmq.PUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, 10_000)
        self.listener.bind(socket, self.endpoint)  # closes the socket if it fails
        self._socket = socket

    async def setup(self) -> None:
        if self._socket is None:
            self.bind()

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
        self.close()

    def close(self) -> None:
        """Close the socket; also for a publisher bound but never started."""
        if self._socket is not None:
            self._socket.close(linger=0)
