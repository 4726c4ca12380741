"""A worker's I/O thread: the only code that touches its DEALER socket.

zmq sockets are not thread-safe, so the I/O thread owns the socket: it says hello,
heartbeats every interval (also while the main thread computes), sends what the other
threads queue, files incoming messages into the inbox, and raises the stop and cancel
`Flags` the compute loop checks between blocks.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import zmq

from virnuc.protocol import (
    Cancel,
    DaemonBeat,
    FromDaemon,
    Heartbeat,
    Hello,
    ProtocolError,
    WorkerShutdown,
    decode_from_daemon,
)
from virnuc.protocol.constants import WORKER_CURVE_ENV
from virnuc.protocol.worker import WorkerMessageBase
from virnuc.worker.exits import EXIT_FATAL, EXIT_ORPHANED

Log = Any  # a structlog BoundLogger

CLOSE_TIMEOUT_S = 5.0  # how long a graceful exit waits for acks to leave


# --- flags shared between threads --------------------------------------------------------


class Flags:
    """Stop and per-job cancel requests, raised by the I/O thread or a signal."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.add(job_id)

    def is_cancelled(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancelled

    def clear_cancel(self, job_id: str) -> None:
        """Called when the `cancel` itself is taken from the inbox, in message order,
        so an `assign` the daemon sends after it runs normally."""
        with self._lock:
            self._cancelled.discard(job_id)


# --- the I/O thread ----------------------------------------------------------------------


class IoLink:
    """Owns the DEALER socket on its own thread; other threads only use queues."""

    def __init__(
        self,
        endpoint: str,
        worker_id: str,
        interval: float,
        parent_pid: int,
        flags: Flags,
        log: Log,
        daemon_timeout: float | None = None,
    ):
        self.endpoint = endpoint
        self.worker_id = worker_id
        self.interval = interval
        self.parent_pid = parent_pid
        self.flags = flags
        self.log = log
        # A pilot's daemon is no parent of it: silence this long means virnucd is gone.
        self.daemon_timeout = daemon_timeout
        self._heard = time.monotonic()
        self.inbox: queue.Queue[FromDaemon] = queue.Queue()
        # bytes to send, or the Event of a `close` (set once all before it is delivered)
        self._outbox: queue.Queue[bytes | threading.Event] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._beats = 0
        self._thread = threading.Thread(target=self._run, name="worker-io", daemon=True)

    def start(self, hello: Hello | None) -> None:
        """Start the thread; `hello` goes first (None: a worker that cannot start)."""
        if hello is not None:
            self.send(hello)
        self._thread.start()

    def send(self, message: WorkerMessageBase) -> None:
        """Queue a message for the daemon (any thread); order is kept."""
        self._put(message.encode())

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Deliver everything queued so far, then end the thread (any thread may call).

        zmq has no "flushed" call; closing the socket with a linger and ending the
        context is what waits until queued messages are written to the peer.
        Returns False when that did not finish within `timeout` (about twice that
        in the worst case) or the thread was already gone.
        """
        if not self._thread.is_alive():
            return False
        delivered = threading.Event()
        self._put(delivered)
        finished = delivered.wait(timeout)
        self._thread.join(timeout)
        return finished

    def _put(self, item: bytes | threading.Event) -> None:
        self._outbox.put(item)
        with contextlib.suppress(BlockingIOError):  # pipe full: a wake-up is pending anyway
            os.write(self._wake_w, b"\0")

    def _run(self) -> None:
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, self.worker_id.encode())
        sock.setsockopt(zmq.LINGER, 0)
        curve_client(sock, os.environ)
        sock.connect(self.endpoint)
        try:
            delivered = self._loop(sock)
        except Exception:  # a dead I/O thread would look like a hung worker: die loudly
            self.log.exception("worker.io_failed")
            os._exit(EXIT_FATAL)
        sock.close(linger=int(CLOSE_TIMEOUT_S * 1000))
        context.term()  # returns once queued messages are delivered or the linger ends
        delivered.set()

    def _loop(self, sock: zmq.Socket[bytes]) -> threading.Event:
        """Serve the socket until a `close` request is reached; return its Event."""
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        pending: deque[bytes | threading.Event] = deque()
        next_beat = time.monotonic() + self.interval
        while True:
            wait_s = min(max(next_beat - time.monotonic(), 0.0), 1.0)
            poller.register(sock, zmq.POLLIN | (zmq.POLLOUT if pending else 0))
            events = dict(poller.poll(int(wait_s * 1000)))
            if events.get(sock, 0) & zmq.POLLIN:
                self._receive_all(sock)
            self._take_outbox(pending)
            closing = self._send_pending(sock, pending)
            if closing is not None:
                return closing
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.interval
                if not pending:  # a daemon not reading our acks does not need beats
                    self._heartbeat(sock)
            self._check_parent()
            self._check_daemon()

    def _take_outbox(self, pending: deque[bytes | threading.Event]) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        with contextlib.suppress(queue.Empty):
            while True:
                pending.append(self._outbox.get_nowait())

    def _send_pending(
        self, sock: zmq.Socket[bytes], pending: deque[bytes | threading.Event]
    ) -> threading.Event | None:
        """Send in order without blocking; returns a `close` request once reached."""
        while pending:
            item = pending[0]
            if isinstance(item, threading.Event):
                return item
            try:
                sock.send(item, zmq.NOBLOCK)
            except zmq.Again:  # high-water mark: wait for POLLOUT
                return None
            pending.popleft()
        return None

    def _heartbeat(self, sock: zmq.Socket[bytes]) -> None:
        self._beats += 1
        with contextlib.suppress(zmq.Again):
            sock.send(Heartbeat(worker_id=self.worker_id, seq=self._beats).encode(), zmq.NOBLOCK)

    def _receive_all(self, sock: zmq.Socket[bytes]) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._dispatch(frames)

    def _dispatch(self, frames: list[bytes]) -> None:
        """Decode one message; malformed input is logged and dropped, never fatal."""
        try:
            message = decode_from_daemon(frames[-1])
        except ProtocolError as exc:
            self.log.warning("worker.bad_message", frames=len(frames), error=str(exc))
            return
        self._heard = time.monotonic()
        if isinstance(message, DaemonBeat):
            return
        if isinstance(message, Cancel):
            self.flags.cancel(message.job_id)
        elif isinstance(message, WorkerShutdown):
            self.flags.stop.set()
        self.inbox.put(message)

    def _check_parent(self) -> None:
        if os.getppid() != self.parent_pid:
            self.log.warning("worker.orphaned", parent_pid=self.parent_pid)
            os._exit(EXIT_ORPHANED)

    def _check_daemon(self) -> None:
        silence = time.monotonic() - self._heard
        if self.daemon_timeout is not None and silence > self.daemon_timeout:
            self.log.warning("worker.daemon_gone", silent_seconds=round(silence, 1))
            os._exit(EXIT_ORPHANED)


def curve_client(sock: zmq.Socket[bytes], environ: Mapping[str, str]) -> None:
    """Make `sock` a CURVE client when virnucd passed the worker socket's keys."""
    keys = environ.get(WORKER_CURVE_ENV, "").split()
    if keys:
        server, public, secret = (key.encode() for key in keys)
        sock.curve_serverkey = server
        sock.curve_publickey = public
        sock.curve_secretkey = secret
