"""Talking to virnucd: where it listens, one request at a time, and its event stream.

``DaemonClient`` is the only client code that touches ZeroMQ; ``virnuc.protocol``
is the only code that knows the bytes. Every request gets a fresh REQ socket: a REQ
socket whose reply never came is stuck in its send/receive lock-step, so reusing it
after a timeout would fail, and a new ``ipc://`` connection costs microseconds.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from zmq.auth import load_certificate

from virnuc.protocol import (
    DecodeError,
    Event,
    OpArgs,
    ProtocolError,
    Request,
    decode_event,
    decode_reply,
    parse_result,
)
from virnuc.protocol.constants import (
    CONTROL_SOCKET,
    EVENTS_SOCKET,
    default_state_dir,
    socket_file,
)

from .errors import EXIT_USAGE, ClientError, DaemonUnreachable, NoAnswer, from_protocol_error


@dataclass(frozen=True)
class DaemonAddress:
    """Where virnucd listens, and enough about how we chose it to give advice."""

    control: str
    events: str | None  # None: no event stream known, follow jobs by polling only
    state_dir: Path | None  # None when --endpoint named the control socket directly
    source: str  # "--state-dir", "$VIRNUC_STATE_DIR", "--endpoint", ...

    @classmethod
    def for_state_dir(cls, state_dir: Path, source: str) -> DaemonAddress:
        base = state_dir.expanduser().absolute()
        return cls(f"ipc://{base / CONTROL_SOCKET}", f"ipc://{base / EVENTS_SOCKET}", base, source)

    @classmethod
    def resolve(
        cls,
        state_dir: str | None,
        endpoint: str | None,
        events_endpoint: str | None,
        env: Mapping[str, str] = os.environ,
    ) -> DaemonAddress:
        """--endpoint beats --state-dir beats $VIRNUC_STATE_DIR beats the XDG default."""
        if endpoint:
            return cls(endpoint, events_endpoint or _guess_events(endpoint), None, "--endpoint")
        if state_dir:
            address = cls.for_state_dir(Path(state_dir), "--state-dir")
        else:
            address = cls.for_state_dir(*default_state_dir(env))
        if events_endpoint:
            return cls(address.control, events_endpoint, address.state_dir, address.source)
        return address

    def advice(self) -> str:
        """What to tell someone whose virnucd does not answer."""
        if self.state_dir is None:
            return "is virnucd running and listening there?"
        return (
            f"is virnucd running? Start it with: virnucd --state-dir {self.state_dir} "
            f"(state dir: {self.state_dir}, from {self.source})"
        )


def _guess_events(control: str) -> str | None:
    """The events socket beside an ``ipc://…/control.sock``; unknown for anything else."""
    if control.startswith("ipc://") and control.endswith("/" + CONTROL_SOCKET):
        return control[: -len(CONTROL_SOCKET)] + EVENTS_SOCKET
    return None


def _may_connect(path: Path) -> bool:
    """False when the kernel denies us the socket file (its dir, or write on it)."""
    try:
        path.stat()
    except PermissionError:
        return False
    except OSError:
        return True  # missing: said next
    return os.access(path, os.W_OK)


def _unix_listener(path: Path) -> bool:
    """False only when the kernel says nothing listens there (ECONNREFUSED).

    Anything else (a path too long for AF_UNIX, no permission) is left for ZeroMQ
    to find out, so this check can only make a failure faster, never cause one.
    The probe connection is closed at once; ZeroMQ drops it without a handshake.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            return False
        except OSError:
            return True
    return True


@dataclass(frozen=True)
class CurveKeys:
    """What a client needs to talk to a virnucd that listens with CURVE (README, Security).

    ``server`` is the daemon's public key: the client checks it is talking to that
    daemon. ``public``/``secret`` are the client's own pair; the daemon admits the
    client only if ``public`` is in its ``curve_allow_dir``.
    """

    server: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_options(
        cls, server_key: str | None, client_key: str | None, env: Mapping[str, str] = os.environ
    ) -> CurveKeys | None:
        """--curve-server-key/--curve-client-key, else $VIRNUC_CURVE_*; None: no CURVE."""
        server_key = server_key or env.get("VIRNUC_CURVE_SERVER_KEY") or None
        client_key = client_key or env.get("VIRNUC_CURVE_CLIENT_KEY") or None
        if server_key is None and client_key is None:
            return None
        if server_key is None or client_key is None:
            raise ClientError(
                "CURVE needs both --curve-server-key (the daemon's public server.key) and "
                "--curve-client-key (your client.key_secret), or $VIRNUC_CURVE_SERVER_KEY "
                "and $VIRNUC_CURVE_CLIENT_KEY",
                EXIT_USAGE,
            )
        server, _ = _load_key(server_key, "--curve-server-key")
        public, secret = _load_key(client_key, "--curve-client-key")
        if secret is None:
            raise ClientError(
                f"--curve-client-key {client_key} holds no secret key; pass your "
                "NAME.key_secret file (NAME.key is the public half, for the daemon)",
                EXIT_USAGE,
            )
        return cls(server, public, secret)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client of the daemon; call before connect."""
        sock.curve_serverkey = self.server
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def _load_key(path: str, option: str) -> tuple[bytes, bytes | None]:
    try:
        return load_certificate(os.path.expanduser(path))
    except (OSError, ValueError) as exc:
        raise ClientError(
            f"cannot read {option} {path}: {exc} (make keys with: virnucctl keys generate)",
            EXIT_USAGE,
        ) from exc


class DaemonClient:
    """Requests to one virnucd, and subscriptions to its events, over one zmq.Context.

    Use as a context manager: closing it terminates the context, and since every
    socket is opened with linger 0 and closed after use, that never blocks.
    """

    def __init__(
        self,
        endpoint: str,
        events_endpoint: str | None = None,
        timeout: float = 10.0,
        context: zmq.Context[Any] | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.events_endpoint = events_endpoint
        self.timeout = timeout
        self.curve = curve
        self._own_context = context is None
        self._context: zmq.Context[Any] = context or zmq.Context()

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own_context:
            self._context.term()

    def call(self, args: OpArgs, timeout: float | None = None) -> dict[str, Any]:
        """Send one request and return its result map, exactly as the daemon sent it.

        The result is checked against the op's documented shape (unknown fields are
        kept). Raises ``DaemonUnreachable`` (no socket file; ``NoAnswer``: no reply within
        the timeout) and ``ClientError`` carrying the exit code for an error reply.
        """
        self._check_socket_file()
        request = Request.new(args)
        payload = self._exchange(request.encode(), self.timeout if timeout is None else timeout)
        try:
            reply = decode_reply(payload)
            if reply.id != request.id:
                raise DecodeError(f"reply id {reply.id!r} does not match request {request.id!r}")
            result = reply.unwrap()
            parse_result(request.op, result)
        except ProtocolError as e:
            raise from_protocol_error(e, self.endpoint) from e
        return result

    def _check_socket_file(self) -> None:
        """Fail at once, not after the timeout, when no virnucd can be listening.

        ZeroMQ connects in the background and retries forever, so without this a
        missing or stale socket file (left by a virnucd that stopped or was killed)
        would only show as a timeout. Checked on every call: it costs one local
        connect, and a daemon killed during ``wait`` is then reported at once.
        """
        path = socket_file(self.endpoint)
        if path is None:
            return
        if not _may_connect(path):
            raise DaemonUnreachable(
                self.endpoint,
                f"permission denied on {path}: virnucd serves only the members of its "
                "group (ask its admin to add you)",
            )
        if not path.exists():
            raise DaemonUnreachable(
                self.endpoint, f"no virnucd at {self.endpoint} ({path} does not exist)"
            )
        if not _unix_listener(path):
            raise DaemonUnreachable(
                self.endpoint,
                f"no virnucd listening at {self.endpoint} (a stale socket file; "
                "its virnucd has stopped)",
            )

    def _exchange(self, payload: bytes, timeout: float) -> bytes:
        sock = self._context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            if self.curve is not None:
                self.curve.apply(sock)
            sock.connect(self.endpoint)
            # A connect-side REQ queues the message even before the peer exists, so
            # this does not block; NOBLOCK makes sure of it.
            sock.send(payload, zmq.NOBLOCK)
            if not sock.poll(int(timeout * 1000), zmq.POLLIN):
                raise NoAnswer(
                    self.endpoint,
                    f"no answer from virnucd at {self.endpoint} within {timeout:g} s"
                    + self._curve_hint(),
                )
            return sock.recv()
        except zmq.Again as e:
            raise DaemonUnreachable(
                self.endpoint, f"cannot send to virnucd at {self.endpoint}"
            ) from e
        except zmq.ZMQError as e:
            raise ClientError(f"cannot talk to virnucd at {self.endpoint}: {e}") from e
        finally:
            sock.close()

    def _curve_hint(self) -> str:
        """Why a daemon that runs may still not answer: CURVE refuses silently."""
        if self.curve is not None:
            return (
                " (with CURVE, a client key missing from the daemon's curve_allow_dir, or "
                "a --curve-server-key that is not the daemon's, looks just like this)"
            )
        if socket_file(self.endpoint) is None:
            return (
                " (virnucd listens on tcp:// only with CURVE: pass --curve-server-key and "
                "--curve-client-key, see `virnucctl keys generate --help`)"
            )
        return ""

    @contextmanager
    def subscribe(self, topic_prefix: str) -> Iterator[Subscription]:
        """Events whose topic starts with ``topic_prefix``, until the block ends.

        Without an events endpoint the subscription is empty and callers fall back
        to polling, which they must do anyway: PUB/SUB drops messages.
        """
        sock = None
        if self.events_endpoint is not None:
            sock = self._context.socket(zmq.SUB)
            sock.setsockopt(zmq.LINGER, 0)
            try:
                if self.curve is not None:
                    self.curve.apply(sock)
                sock.setsockopt_string(zmq.SUBSCRIBE, topic_prefix)
                sock.connect(self.events_endpoint)
            except zmq.ZMQError:
                sock.close()
                sock = None  # a bad events endpoint only costs us the live updates
        try:
            yield Subscription(sock)
        finally:
            if sock is not None:
                sock.close()


class Subscription:
    """A SUB socket's events, decoded; malformed or foreign-version ones are dropped."""

    def __init__(self, sock: zmq.Socket[bytes] | None) -> None:
        self._sock = sock

    def receive(self, timeout: float) -> Event | None:
        """The next valid event, or None if none arrives within ``timeout`` seconds."""
        if self._sock is None:  # nothing to listen to: just let the caller's poll wait
            time.sleep(timeout)
            return None
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if not poller.poll(int(remaining * 1000) + 1):
                return None
            try:
                return decode_event(self._sock.recv_multipart())
            except ProtocolError:
                continue  # docs/protocol.md: ignore what we cannot read, keep listening
        return None
