"""Events on the PUB socket: job, worker and daemon events round-trip, topics, and
malformed event frames refused with their codes.
"""

import pytest

import virnuc.protocol as p
from virnuc.protocol import codec
from virnuc.protocol.events import JobEventKind

from tests.protocol.samples import STATUS, WORKER

BAD_EVENTS: dict[str, tuple[list[bytes], p.ErrorCode, str]] = {
    "one frame": ([b"job.j1.state"], p.ErrorCode.BAD_REQUEST, "2 frames, got 1"),
    "bad topic": ([b"\xff", codec.encode({})], p.ErrorCode.BAD_REQUEST, "not UTF-8"),
    "bad body": ([b"t", b"\xc1"], p.ErrorCode.BAD_REQUEST, "not a valid msgpack"),
    "list body": ([b"t", codec.encode([])], p.ErrorCode.BAD_REQUEST, "must be a map"),
    "no version": (
        [b"t", codec.encode({"type": "job.state"})],
        p.ErrorCode.UNSUPPORTED_VERSION,
        "event version None",
    ),
    "version 2": (
        [b"t", codec.encode({"type": "job.state", "v": 2})],
        p.ErrorCode.UNSUPPORTED_VERSION,
        "event version 2",
    ),
    "unknown type": (
        [b"t", codec.encode({"type": "job.exploded", "v": 1})],
        p.ErrorCode.BAD_REQUEST,
        "unknown event type 'job.exploded'",
    ),
}


def test_job_events_round_trip() -> None:
    kinds: list[tuple[JobEventKind, p.EventType]] = [
        ("progress", p.EventType.JOB_PROGRESS),
        ("state", p.EventType.JOB_STATE),
    ]
    for kind, event_type in kinds:
        frames = p.job_event(kind, STATUS)
        assert frames[0] == f"job.j1.{kind}".encode()
        event = p.decode_event(frames)
        assert (event.topic, event.type, event.body["v"]) == (f"job.j1.{kind}", event_type, 1)
        assert p.event_job_status(event) == STATUS


def test_worker_and_daemon_events_round_trip() -> None:
    event = p.decode_event(p.worker_event(WORKER, models_loaded=True))
    assert (event.topic, event.type) == ("worker.w0.state", p.EventType.WORKER_STATE)
    assert p.event_worker_info(event) == {**WORKER, "models_loaded": True}
    event = p.decode_event(p.daemon_event("stopping"))
    assert (event.topic, event.body["state"]) == (p.DAEMON_TOPIC, "stopping")
    with pytest.raises(ValueError, match="does not carry a JobStatus"):
        p.event_job_status(event)


def test_topic_helpers() -> None:
    assert p.job_topic("j1") == "job.j1."
    assert p.job_topic("j1", "state") == "job.j1.state"
    assert p.worker_topic() == "worker."
    assert p.worker_topic("w0") == "worker.w0.state"
    for bad in ("", "a.b"):
        with pytest.raises(ValueError, match="cannot be used in an event topic"):
            p.job_topic(bad)


def test_encode_event_adds_version_and_needs_type() -> None:
    frames = p.encode_event("custom.topic", {"type": "job.state", "x": 1})
    assert codec.decode(frames[1]) == {"type": "job.state", "x": 1, "v": 1}
    with pytest.raises(ValueError, match="needs a str 'type'"):
        p.encode_event("t", {"x": 1})


@pytest.mark.parametrize(("frames", "code", "text"), BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_bad_events(frames: list[bytes], code: p.ErrorCode, text: str) -> None:
    with pytest.raises(p.ProtocolError, match=text) as info:
        p.decode_event(frames)
    assert info.value.code is code
