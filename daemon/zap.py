"""virnucd's ZAP handler: every connection to the control and events sockets gets a
sealed `Caller` (daemon/caller.py) as its User-Id, or is refused.

libzmq asks the handler bound at inproc://zeromq.zap.01 on the socket's context about
each new connection of a socket with a ZAP domain (`Listener.bind` sets one): for CURVE
always, for NULL because of the domain. The reply's User-Id is then on every message
that connection delivers (`frame.get("User-Id")`), overriding any User-Id a client
writes into its own handshake metadata; sealing it makes one that did not come from
here worthless. The rules of who is who are in daemon/identify.py.

One asyncio task owns the REP socket; it must be bound before any public socket binds
(a handshake finding no handler would pass without an identity; the seal then refuses
its requests) and closed after they are. It never raises on a request: an exception
would end the task and with it every new connection.

The handler runs on the event loop; looking up a user (passwd, groups) and reading the
key dirs happen once per connection, not per request.
"""

from __future__ import annotations

import asyncio

import structlog
import zmq
import zmq.asyncio

from .caller import CallerSeal
from .identify import Identify, Refused
from .rate_limit import RateLimitedWarning

log = structlog.get_logger()

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by the ZAP specification (RFC 27)
ZAP_VERSION = b"1.0"
REQUEST_FIELDS = 6  # version, request id, domain, address, routing id, mechanism


class ZapHandler:
    def __init__(self, context: zmq.asyncio.Context, identify: Identify, seal: CallerSeal):
        self.context = context
        self.identify = identify
        self.seal = seal
        self._socket: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._warned = RateLimitedWarning()

    def start(self) -> None:
        """Bind the ZAP endpoint and answer from now on; before any public socket binds."""
        socket = self.context.socket(zmq.REP)
        socket.setsockopt(zmq.LINGER, 0)
        socket.bind(ZAP_ENDPOINT)
        self._socket = socket
        self._task = asyncio.create_task(self._serve(), name="zap")
        if self.identify.allow_dir is not None:
            self._log_curve_keys()

    def _log_curve_keys(self) -> None:
        counts = self.identify.key_counts()
        log.info("access.curve", allow_dir=str(self.identify.allow_dir), **counts)
        if not any(counts.values()):
            log.warning(
                "access.no_client_keys",
                allow_dir=str(self.identify.allow_dir),
                advice="no client can connect until a public key (NAME.key) is copied there",
            )

    async def stop(self) -> None:
        """After the public sockets closed: no handshake can be left waiting for us."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    async def _serve(self) -> None:
        assert self._socket is not None
        while True:
            frames = await self._socket.recv_multipart()
            await self._socket.send_multipart(self.reply(frames))

    def reply(self, frames: list[bytes]) -> list[bytes]:
        """The ZAP reply to one request: 200 with the sealed Caller, or 400 (refused) or
        500 (our bug; logged, and refused as well)."""
        if len(frames) < REQUEST_FIELDS or frames[0] != ZAP_VERSION:
            self._warned("zap.malformed_request", fields=len(frames))
            request_id = frames[1] if len(frames) > 1 else b""
            return [ZAP_VERSION, request_id, b"500", b"malformed ZAP request", b"", b""]
        request_id, address, mechanism = frames[1], frames[3], frames[5]
        try:
            caller = self.identify.caller(
                mechanism.decode(errors="replace"), address.decode(errors="replace"), frames[6:]
            )
        except Refused as exc:
            self._warned(
                "zap.refused", reason=str(exc), mechanism=mechanism.decode("ascii", "replace")
            )
            return [ZAP_VERSION, request_id, b"400", b"not allowed", b"", b""]
        except Exception:
            log.exception("zap.failed", address=address.decode(errors="replace"))
            return [ZAP_VERSION, request_id, b"500", b"internal error", b"", b""]
        log.debug("zap.caller", caller=caller.label, owner=caller.owner, admin=caller.admin)
        return [ZAP_VERSION, request_id, b"200", b"OK", self.seal.seal(caller).encode(), b""]
