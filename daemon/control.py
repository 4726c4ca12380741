"""The control server: a ROUTER socket answering REQ clients and DEALER clients.

Malformed input never stops it: a message that cannot be routed back is dropped, a
payload that does not decode gets the error reply the protocol documents, and every
complaint is logged at most once per interval. Each request runs as its own task
(at most `MAX_IN_FLIGHT` at once), so a slow `kill` never delays a `ping`.

Each request's caller is the sealed User-Id our ZAP handler (daemon/zap.py) set on its
connection; a message without a valid seal is answered `forbidden`, never dispatched.
"""

from __future__ import annotations

import asyncio

import structlog
import zmq
import zmq.asyncio

from virnuc.protocol import (
    DecodeError,
    EncodeError,
    ErrorCode,
    ProtocolError,
    decode_request,
    encode,
    error_reply,
    reply_frames,
    split_request_frames,
)

from .access import Listener
from .caller import Caller, CallerSeal
from .handlers import DaemonContext, dispatch
from .rate_limit import RateLimitedWarning

log = structlog.get_logger()

MAX_IN_FLIGHT = 64
# ZeroMQ drops (and disconnects) a peer sending a frame over the limit plus this
# fraction of it; in between the client still gets a `too_large` reply. Small, because
# ZeroMQ receives every frame whole before we can look at it: with up to `RECEIVE_QUEUE`
# of them queued per client, a hostile client can make virnucd hold at most about
# RECEIVE_QUEUE * 1.25 * max_message_size (320 MiB by default), and only while it sends.
HARD_SIZE_SLACK = 0.25
RECEIVE_QUEUE = MAX_IN_FLIGHT


class ControlServer:
    def __init__(
        self,
        context: zmq.asyncio.Context,
        endpoint: str,
        ctx: DaemonContext,
        listener: Listener | None = None,
        *,
        seal: CallerSeal,
    ):
        self.context = context
        self.seal = seal
        self.endpoint = endpoint
        self.ctx = ctx
        self.listener = listener or Listener()
        self.max_size = ctx.config.max_message_size
        self._socket: zmq.asyncio.Socket | None = None
        self._loop: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned = RateLimitedWarning()

    def bind(self) -> None:
        """Listen (requests queue until `start`); raises `AccessError` if it cannot.

        Separate from `start` so that virnucd binds before it starts any worker: a
        tcp port in use then stops it at once, with nothing to clean up.
        """
        socket = self.context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, int(self.max_size * (1 + HARD_SIZE_SLACK)))
        socket.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE)
        self.listener.bind(socket, self.endpoint)  # closes the socket if it fails
        self._socket = socket

    def start(self) -> None:
        if self._socket is None:
            self.bind()
        self._loop = asyncio.create_task(self._serve(), name="control")

    async def _serve(self) -> None:
        assert self._socket is not None
        while True:
            received = await self._socket.recv_multipart(copy=False)
            caller = self._caller(received[-1])
            frames = [frame.bytes for frame in received]
            if sum(map(len, frames)) > self.max_size:
                # Refused by size alone: answer (or drop) it now, so no oversized frame
                # waits in memory for a slot while more arrive.
                await self._answer(frames, caller)
                continue
            await self._slots.acquire()
            task = asyncio.create_task(self._answer(frames, caller))
            self._tasks.add(task)
            task.add_done_callback(self._done)
            # recv returns at once while messages are queued; yield so each request is
            # decoded (and mostly answered) before the next is read: frames never pile up.
            await asyncio.sleep(0)

    def _caller(self, frame: zmq.Frame) -> Caller | None:
        """The sealed Caller on the message's connection; None when it has none (a
        socket bound without ZAP) or one that is not ours."""
        try:
            user_id = frame.get("User-Id")
        except zmq.ZMQError:  # no ZAP for this connection: no User-Id at all
            return None
        return self.seal.unseal(user_id if isinstance(user_id, str) else None)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _answer(self, frames: list[bytes], caller: Caller | None) -> None:
        try:
            routing, payload = split_request_frames(frames)
        except DecodeError as exc:
            self._warned("control.dropped", reason=exc.message)
            return
        reply = await self._reply_for(payload, caller)
        assert self._socket is not None
        try:
            await self._socket.send_multipart(reply_frames(routing, reply))
        except zmq.ZMQError as exc:  # the client went away
            self._warned("control.reply_failed", error=str(exc))

    async def _reply_for(self, payload: bytes, caller: Caller | None) -> bytes:
        try:
            request = decode_request(payload, self.max_size)
        except ProtocolError as exc:
            if caller is None:
                return self._unauthenticated(exc.request_id)
            self._warned("control.bad_request", code=exc.code, reason=exc.message)
            return encode(error_reply(exc.request_id, exc.code, exc.message))
        if caller is None:
            return self._unauthenticated(request.id)
        reply = await dispatch(self.ctx, request, caller)
        try:
            return encode(reply, self.max_size)
        except EncodeError as exc:
            code = ErrorCode.TOO_LARGE if exc.code == ErrorCode.TOO_LARGE else ErrorCode.INTERNAL
            return encode(error_reply(request.id, code, f"reply not sent: {exc.message}"))

    def _unauthenticated(self, request_id: str) -> bytes:
        self._warned("control.unauthenticated", endpoint=self.endpoint)
        return encode(error_reply(request_id, ErrorCode.FORBIDDEN, "unauthenticated connection"))

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._socket is not None:
            self._socket.close(linger=0)
