"""A scripted virnucd for client-side tests: real sockets over ipc://, answers from a script.

It is a thread of the test holding a ROUTER (control) and a PUB (events) in a temporary
state dir, and answers with ``virnuc.protocol``'s helpers: malformed requests get the
error reply docs/protocol.md promises, and frames that cannot be answered (no routing
envelope) are dropped and counted, as virnucd does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import zmq

import virnuc.protocol as p
from virnuc.client import cli


@dataclass
class Fail:
    """A scripted error reply."""

    code: p.ErrorCode
    message: str


Handler = Callable[[p.Request], "dict[str, Any] | Fail | None"]  # None: no reply at all


def sequence(*answers: dict[str, Any] | Fail | None) -> Handler:
    """Answer with each of ``answers`` in turn, then keep repeating the last."""
    queue = list(answers)

    def handler(request: p.Request) -> dict[str, Any] | Fail | None:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler


def paged_list(jobs: list[dict[str, Any]]) -> Handler:
    """Answer ``list`` a page at a time, as virnucd does."""

    def handler(request: p.Request) -> dict[str, Any]:
        assert isinstance(request.args, p.ListArgs)
        end = None if request.args.limit is None else request.args.offset + request.args.limit
        return {"jobs": jobs[request.args.offset : end], "total": len(jobs)}

    return handler


def job(job_id: str = "j1", state: str = "running", done: int = 3, **extra: Any) -> dict[str, Any]:
    """A JobStatus map as the daemon sends it."""
    return {
        "job_id": job_id,
        "state": state,
        "records_total": 10,
        "records_done": done,
        "frames_done": done * 7,
        "restarts": 0,
        **extra,
    }


def event(kind: p.JobEventKind, status: dict[str, Any]) -> list[bytes]:
    """A job event's frames, as the daemon publishes them."""
    return p.job_event(kind, cast(p.JobStatus, status))


@dataclass
class FakeDaemon:
    """A scripted virnucd: ``handlers[op]`` answers requests, ``events`` are re-published.

    Events are sent again on every loop turn (about every 10 ms) because PUB/SUB drops
    whatever is published before a subscription arrives; the client must cope with
    both lost and repeated events anyway.
    """

    state_dir: Path
    silent: bool = False  # bind, but never answer: the client must time out
    handlers: dict[str, Handler] = field(default_factory=dict)
    events: list[list[bytes]] = field(default_factory=list)
    requests: list[p.Request] = field(default_factory=list)
    dropped: int = 0  # frames without a routing envelope: nobody to answer

    def __post_init__(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def control(self) -> str:
        return f"ipc://{self.state_dir}/control.sock"

    def ops(self) -> list[str]:
        return [r.op.value for r in self.requests]

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(5), "fake daemon did not bind"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive()

    def _serve(self) -> None:
        ctx = zmq.Context()
        router, pub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB)
        try:
            for sock in (router, pub):
                sock.setsockopt(zmq.LINGER, 0)
            router.bind(self.control)
            pub.bind(f"ipc://{self.state_dir}/events.sock")
            self._ready.set()
            while not self._stop.is_set():
                if router.poll(10, zmq.POLLIN):
                    self._answer(router)
                for frames in list(self.events):
                    pub.send_multipart(frames)
        finally:
            router.close()
            pub.close()
            ctx.term()

    def _answer(self, router: zmq.Socket[bytes]) -> None:
        try:
            routing, payload = p.split_request_frames(router.recv_multipart())
        except p.DecodeError:
            self.dropped += 1
            return
        reply = self._reply(payload)
        if reply is not None:
            router.send_multipart(p.reply_frames(routing, p.encode(reply)))

    def _reply(self, payload: bytes) -> dict[str, Any] | None:
        try:
            request = p.decode_request(payload)
        except p.ProtocolError as e:
            return p.error_reply(e.request_id, e.code, e.message)
        self.requests.append(request)
        if self.silent:
            return None
        answer = self.handlers.get(request.op.value, lambda r: {})(request)
        if answer is None:  # like a paused or busy virnucd: the client's timeout runs out
            return None
        if isinstance(answer, Fail):
            return p.error_reply(request.id, answer.code, answer.message)
        return p.ok_reply(request.id, answer)


def run(daemon: FakeDaemon, *argv: str) -> int:
    """`virnucctl --state-dir DAEMON'S *argv`, in process: its exit status."""
    return cli.main(["--state-dir", str(daemon.state_dir), *argv])
