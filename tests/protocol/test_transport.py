"""The control socket's frames: the routing envelope split off and put back, frames
nobody can be answered for, and, over real sockets (a scripted virnucd,
tests/support/fake_daemon.py), the documented client example and a DEALER's delimiter."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

import virnuc.protocol as p

from tests.protocol.samples import STATUS
from tests.support.fake_daemon import FakeDaemon, sequence


def test_split_and_reply_frames() -> None:
    routing, payload = p.split_request_frames([b"peer", b"", b"data"])
    assert (routing, payload) == ([b"peer"], b"data")
    assert p.reply_frames(routing, b"answer") == [b"peer", b"", b"answer"]
    assert p.split_request_frames([b"hop", b"peer", b"", b"x"]) == ([b"hop", b"peer"], b"x")


@pytest.mark.parametrize(
    "frames",
    [[], [b"peer"], [b"peer", b"data"], [b"peer", b""], [b"peer", b"", b"a", b"b"], [b"", b"x"]],
)
def test_unroutable_frames_are_decode_errors(frames: list[bytes]) -> None:
    with pytest.raises(p.DecodeError):
        p.split_request_frames(frames)


def test_facade_exports_exist() -> None:
    missing = [name for name in p.__all__ if not hasattr(p, name)]
    assert missing == []
    assert (p.PROTOCOL_VERSION, p.MAX_MESSAGE_SIZE) == (1, 4 * 1024 * 1024)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[FakeDaemon]:
    """Answers submit with job "j1", and status with running once, then done."""
    fake = FakeDaemon(tmp_path)
    fake.handlers["submit"] = lambda request: {"job_id": "j1"}
    fake.handlers["status"] = sequence(dict(STATUS), {**STATUS, "state": p.JobState.DONE})
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def dealer(daemon: FakeDaemon) -> Iterator[zmq.Socket[bytes]]:
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(daemon.control)
    yield sock
    sock.close(linger=0)
    context.term()


def test_documented_client_example_runs(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    example = doc.split("## Client example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(example.strip().splitlines()) <= 20
    monkeypatch.setenv("VIRNUC_STATE_DIR", str(daemon.state_dir))
    monkeypatch.setattr(time, "sleep", lambda _seconds: None)
    namespace: dict[str, Any] = {}
    try:
        exec(compile(example, "docs/protocol.md", "exec"), namespace)
    finally:
        namespace["sock"].close(linger=0)
    assert capsys.readouterr().out.splitlines() == ["4/10 records", "j1 done "]


def test_dealer_with_delimiter_gets_replies_and_bad_frames_are_dropped(
    daemon: FakeDaemon, dealer: zmq.Socket[bytes]
) -> None:
    dealer.send_multipart([b"no delimiter"])  # unanswerable: dropped, daemon keeps going
    dealer.send_multipart([b"", b"\xc1"])  # answerable garbage: bad_request with id ""
    dealer.send_multipart([b"", p.Request.new(p.PingArgs(), "r2").encode()])
    empty, first = dealer.recv_multipart()
    assert empty == b""
    with pytest.raises(p.RemoteError) as info:
        p.decode_reply(first).unwrap()
    assert (info.value.code, info.value.request_id) == (p.ErrorCode.BAD_REQUEST, "")
    assert p.decode_reply(dealer.recv_multipart()[1]) == p.Reply(v=1, id="r2", ok=True, result={})
    assert daemon.dropped == 1
