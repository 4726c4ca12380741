"""The one ROUTER socket all worker processes connect to, and its message routing.

Each worker's DEALER identifies itself with its slot id (`w0`, `w1`, ...). Incoming
messages go, in order, to the route its owner gave for that slot (`route`): the
supervisor's `deliver`, which notes the arrival time before it queues the message, so
a supervisor busy verifying a large part never mistakes its worker for a hung one.
`ROUTER_HANDOVER` lets a restarted worker take over its slot's identity from the dead
process.

On an ipc:// endpoint the socket file's permissions keep strangers out. A tcp://
endpoint (Slurm pilots on other nodes) is bound with CURVE, admitting only the
workers' key (daemon/slots/keys.py); its ZAP handler lives on the hub's own zmq
context, so the control socket's client keys never let anyone in here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
import zmq
import zmq.asyncio

from virnuc.protocol import FromDaemon, FromWorker, ProtocolError, decode_from_worker

from ..access import CurveServer, start_authenticator, stop_authenticator
from ..rate_limit import RateLimitedWarning

log = structlog.get_logger()


Deliver = Callable[[FromWorker], None]  # takes a slot's message without waiting


class WorkerHub:
    def __init__(
        self,
        context: zmq.asyncio.Context,
        endpoint: str,
        max_message_size: int,
        curve: CurveServer | None = None,
    ):
        self.curve = curve
        self.context = zmq.asyncio.Context() if curve is not None else context
        self._auth = start_authenticator(self.context, curve)
        self.endpoint = endpoint
        self.max_message_size = max_message_size
        self._routes: dict[str, Deliver] = {}  # by slot id
        self._socket: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._warned = RateLimitedWarning()

    def route(self, worker_id: str, deliver: Deliver) -> None:
        """Send what the worker of slot `worker_id` says to `deliver` (before `start`)."""
        self._routes[worker_id] = deliver

    def start(self) -> None:
        socket = self.context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # sending to a gone worker raises
        socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_size)
        if self.curve is not None:
            self.curve.apply(socket)
        socket.bind(self.endpoint)
        self._socket = socket
        self._reader = asyncio.create_task(self._read_loop(), name="worker-hub")

    async def send(self, worker_id: str, message: FromDaemon) -> bool:
        """Send to a worker; False when it is not connected (it died or has not started)."""
        assert self._socket is not None
        try:
            await self._socket.send_multipart([worker_id.encode(), message.encode()])
        except zmq.ZMQError as exc:
            log.warning("worker.send_failed", worker=worker_id, type=message.TYPE, error=str(exc))
            return False
        return True

    async def _read_loop(self) -> None:
        assert self._socket is not None
        while True:
            frames = await self._socket.recv_multipart()
            self._route(frames)

    def _route(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self._warned("worker.bad_frames", frames=len(frames))
            return
        worker_id = frames[0].decode(errors="replace")
        deliver = self._routes.get(worker_id)
        if deliver is None:
            self._warned("worker.unknown_id", worker=worker_id)
            return
        try:
            message = decode_from_worker(frames[1], self.max_message_size)
        except ProtocolError as exc:
            self._warned("worker.bad_message", worker=worker_id, error=exc.message)
            return
        deliver(message)

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._socket is not None:
            self._socket.close(linger=0)
        if self.curve is not None:  # its own context
            stop_authenticator(self._auth)
            self.context.term()
