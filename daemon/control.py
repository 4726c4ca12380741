"""The control server: a ROUTER socket answering REQ clients and DEALER clients.

Malformed input never stops it: a message that cannot be routed back is dropped, a
payload that does not decode gets the error reply the protocol documents, and every
complaint is logged at most once per interval. Each request runs as its own task
(at most `MAX_IN_FLIGHT` at once), so a slow `kill` never delays a `ping`.
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
    ):
        self.context = context
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
            frames = await self._socket.recv_multipart(copy=True)
            if sum(map(len, frames)) > self.max_size:
                # Refused by size alone: answer (or drop) it now, so no oversized frame
                # waits in memory for a slot while more arrive.
                await self._answer(frames)
                continue
            await self._slots.acquire()
            task = asyncio.create_task(self._answer(frames))
            self._tasks.add(task)
            task.add_done_callback(self._done)
            # recv returns at once while messages are queued; yield so each request is
            # decoded (and mostly answered) before the next is read: frames never pile up.
            await asyncio.sleep(0)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _answer(self, frames: list[bytes]) -> None:
        try:
            routing, payload = split_request_frames(frames)
        except DecodeError as exc:
            self._warned("control.dropped", reason=exc.message)
            return
        reply = await self._reply_for(payload)
        assert self._socket is not None
        try:
            await self._socket.send_multipart(reply_frames(routing, reply))
        except zmq.ZMQError as exc:  # the client went away
            self._warned("control.reply_failed", error=str(exc))

    async def _reply_for(self, payload: bytes) -> bytes:
        try:
            request = decode_request(payload, self.max_size)
        except ProtocolError as exc:
            self._warned("control.bad_request", code=exc.code, reason=exc.message)
            return encode(error_reply(exc.request_id, exc.code, exc.message))
        reply = await dispatch(self.ctx, request)
        try:
            return encode(reply, self.max_size)
        except EncodeError as exc:
            code = ErrorCode.TOO_LARGE if exc.code == ErrorCode.TOO_LARGE else ErrorCode.INTERNAL
            return encode(error_reply(request.id, code, f"reply not sent: {exc.message}"))

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._socket is not None:
            self._socket.close(linger=0)
