"""The event publisher: one XPUB socket, fed through a bounded inbox, that sends each
subscriber only the events its caller may see.

Publishing never blocks the caller's work: when subscribers are slow, XPUB drops
messages (ZeroMQ's high-water mark), and when the inbox itself is full the event is
dropped here too. Events are progress hints; `status` is the truth.

Subscriptions: the socket is in manual mode (ZMQ_XPUB_MANUAL), so a subscription arrives
here as a message and takes effect only if we apply it, with `socket.subscribe(topic)`;
libzmq applies that to the pipe the message last received came from. So one
subscription is decided at a time, nothing else is received before it is applied or
refused, and a decision that needs a job's owner from the database is looked up by a
separate task while this actor keeps sending events. `subscriptions.py` says who may
follow what.

libzmq pairs a received message with its pipe through a queue that only subscriptions
fill, yet it also hands up any other message a peer sends (an XSUB may), taking the
next subscription's pipe for it: from then on, until its queue runs empty, a
subscription could be applied to another subscriber's pipe. So after such a message,
(un)subscriptions are ignored until nothing is left to receive.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
import zmq
import zmq.asyncio

from .access import Listener
from .actor import Actor
from .caller import CallerSeal
from .rate_limit import RateLimitedWarning
from .subscriptions import (
    MAX_TOPIC,
    OwnerLookup,
    SubscriptionGate,
    SubscriptionRequest,
    read_request,
)

log = structlog.get_logger()

#: Subscriptions read in one go before queued events get their turn again.
READ_BURST = 64


class _Readable:
    """The socket has (un)subscriptions to read."""


_READABLE = _Readable()


@dataclass(frozen=True)
class _Decided:
    """The owner lookup for the subscription last received has answered."""

    request: SubscriptionRequest
    allowed: bool


class EventPublisher(Actor[list[bytes] | _Readable | _Decided]):
    name = "events"

    def __init__(
        self,
        context: zmq.asyncio.Context,
        endpoint: str,
        listener: Listener | None = None,
        *,
        seal: CallerSeal,
        owner_of: OwnerLookup | None = None,
    ):
        super().__init__(inbox_size=10_000)
        self.context = context
        self.endpoint = endpoint
        self.listener = listener or Listener()
        self.gate = SubscriptionGate(seal, owner_of)
        self.dropped = 0
        self.handled = 0  # messages from subscribers dealt with: applied, refused, ignored
        self._socket: zmq.asyncio.Socket | None = None
        self._lookup: asyncio.Task[None] | None = None
        self._may_poll = asyncio.Event()  # set while nothing is queued to read or decide
        self._watcher: asyncio.Task[None] | None = None
        self._misaligned = False
        self._warned = RateLimitedWarning()

    def bind(self) -> None:
        """Listen now, synchronously; raises `AccessError` if it cannot (see ControlServer)."""
        socket = self.context.socket(zmq.XPUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, 10_000)
        socket.setsockopt(zmq.XPUB_MANUAL, 1)
        socket.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription, repeats too
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_TOPIC + 64)  # room for ZMTP's SUBSCRIBE
        self.listener.bind(socket, self.endpoint)  # closes the socket if it fails
        self._socket = socket

    async def setup(self) -> None:
        if self._socket is None:
            self.bind()
        self._may_poll.set()
        self._watcher = asyncio.create_task(self._watch(), name="events-subscriptions")

    def publish(self, frames: list[bytes]) -> None:
        """Queue an event; drop it (and count) if the inbox is full."""
        try:
            self.inbox.put_nowait(frames)
        except asyncio.QueueFull:
            self.dropped += 1

    async def handle(self, message: list[bytes] | _Readable | _Decided) -> None:
        assert self._socket is not None
        if isinstance(message, _Decided):
            self._lookup = None
            self._apply(message.request, message.allowed)
            await self._read_subscriptions()
        elif isinstance(message, _Readable):
            await self._read_subscriptions()
        else:
            await self._socket.send_multipart(message)

    async def _watch(self) -> None:
        """Tell the actor when subscriptions wait; only ever one such note in flight."""
        assert self._socket is not None
        while True:
            await self._may_poll.wait()
            await self._socket.poll()  # POLLIN
            self._may_poll.clear()
            await self.inbox.put(_READABLE)

    async def _read_subscriptions(self) -> None:
        """Read and decide (un)subscriptions until none is left, a lookup must answer
        first, or `READ_BURST` were read (then the rest waits behind queued events)."""
        assert self._socket is not None
        for _ in range(READ_BURST):
            if self._lookup is not None:
                return  # `_Decided` resumes reading
            try:
                frame = await self._socket.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._on_message(frame)
        # Hand back to the watcher: if more wait, its note queues behind the events.
        self._may_poll.set()

    def _on_message(self, frame: zmq.Frame) -> None:
        request = read_request(frame, self.gate.seal)
        if request is None:
            self._misaligned = True
            self.handled += 1
            self._warned("events.not_a_subscription", size=len(frame.bytes))
        elif self._misaligned:
            self.handled += 1
            self._warned("events.subscription_ignored", caller=request.who)
        else:
            self._decide(request)
        if self._misaligned and not self._socket_has_input():
            self._misaligned = False  # both of libzmq's queues are empty: paired again

    def _decide(self, request: SubscriptionRequest) -> None:
        verdict = self.gate.check(request)
        if isinstance(verdict, bool):
            self._apply(request, verdict)
        else:
            self._lookup = asyncio.create_task(self._look_up(request, verdict))

    async def _look_up(self, request: SubscriptionRequest, job_id: str) -> None:
        allowed = await self.gate.may_follow_job(request.caller, job_id)
        await self.inbox.put(_Decided(request, allowed))

    def _apply(self, request: SubscriptionRequest, allowed: bool) -> None:
        """Apply a decision to the pipe of the message last received (libzmq's
        `_last_pipe`; a no-op if that subscriber has gone)."""
        assert self._socket is not None
        self.handled += 1
        if not allowed:
            topic = request.topic[:MAX_TOPIC].decode(errors="replace")
            self._warned("events.subscription_refused", caller=request.who, topic=topic)
        elif request.subscribe:
            self._socket.subscribe(request.topic)
        else:
            self._socket.unsubscribe(request.topic)

    def _socket_has_input(self) -> bool:
        assert self._socket is not None
        events = self._socket.get(zmq.EVENTS)
        return isinstance(events, int) and bool(events & zmq.POLLIN)

    async def teardown(self) -> None:
        for task in (self._watcher, self._lookup):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._watcher, self._lookup) if t is not None), return_exceptions=True
        )
        self.close()

    def close(self) -> None:
        """Close the socket; also for a publisher bound but never started."""
        if self._socket is not None:
            self._socket.close(linger=0)
