"""The wire protocol: codec, control envelope, ops, events, daemon<->worker messages.

No sockets here: everything the daemon and clients exchange is built, encoded,
decoded and validated in memory, including every way a peer can get it wrong.
"""

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import virnuc.protocol as p
from virnuc.protocol import codec
from virnuc.protocol.constants import MAX_DEPTH
from virnuc.protocol.events import JobEventKind

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ------------------------------------------------------------------------

wire_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(),
)
wire_values = st.recursive(
    wire_scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)
ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)
abs_paths = st.builds(
    lambda s: "/" + s, st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=20)
)
names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
counts = st.integers(0, 2**40)
positive = st.integers(1, 2**40)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


submit_args = st.builds(
    p.SubmitArgs,
    input=abs_paths,
    output=abs_paths,
    profile=optional(names),
    esm=optional(names),
    dnabert=optional(names),
    classifier=optional(abs_paths),
    chunk_length=st.sampled_from([None, 300, 500]),
    save_embeddings=st.booleans(),
    checkpoint_every=optional(positive),
    force=st.booleans(),
)
any_args = st.one_of(
    st.just(p.PingArgs()),
    submit_args,
    st.builds(p.StatusArgs, job_id=names),
    st.builds(p.ListArgs, offset=counts, limit=optional(positive)),
    st.builds(p.KillArgs, job_id=names),
    st.just(p.WorkersArgs()),
    st.just(p.ShutdownArgs()),
)
requests = st.builds(p.Request, id=ids, args=any_args)


def wire_request(op: Any = "ping", args: Any = None, **envelope: Any) -> dict[str, Any]:
    """A request map that is valid unless the caller overrides a part of it."""
    message = {"v": 1, "id": "r1", "op": op, "args": {} if args is None else args}
    message.update(envelope)
    return message


# --- codec ---------------------------------------------------------------------------


@FAST
@given(wire_values)
def test_codec_round_trips_wire_values(value: Any) -> None:
    assert codec.decode(codec.encode(value)) == value


@FAST
@given(st.binary(max_size=64))
def test_decode_of_random_bytes_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(p.DecodeError):
        codec.decode(data)


@FAST
@given(st.binary(max_size=64))
def test_decode_request_of_random_bytes_raises_only_protocol_error(data: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.decode_request(data)


def test_every_truncation_of_a_message_is_a_decode_error() -> None:
    data = p.Request.new(p.SubmitArgs(input="/in.fa", output="/out")).encode()
    for end in range(len(data)):
        with pytest.raises(p.DecodeError):
            codec.decode(data[:end])


BAD_PAYLOADS = {
    "empty": b"",
    "reserved byte": b"\xc1",
    "trailing data": msgpack.packb({"a": 1}) + b"\xc0",
    "invalid utf-8": b"\xa2\xff\xfe",
    "ext type": msgpack.packb(msgpack.ExtType(5, b"ab")),
    "empty ext type": msgpack.packb(msgpack.ExtType(5, b"")),
    "timestamp": msgpack.packb(msgpack.Timestamp(1, 0)),
    "bytes value": msgpack.packb({"a": b"x"}, use_bin_type=True),
    "bytes key": msgpack.packb({b"a": 1}, use_bin_type=True),
    "int key": msgpack.packb({1: 1}),
    "nested int key": msgpack.packb({"a": [{2: 1}]}),
    "duplicate keys": b"\x82\xa1a\x01\xa1a\x02",
    "too deep": b"\x91" * (MAX_DEPTH + 1) + b"\xc0",
    "beyond msgpack's stack": b"\x91" * 5000 + b"\xc0",
    "huge array header": b"\xdd\xff\xff\xff\xff",
}


@pytest.mark.parametrize("payload", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
def test_bad_payloads_are_decode_errors(payload: bytes) -> None:
    with pytest.raises(p.DecodeError) as info:
        codec.decode(payload)
    assert info.value.code is p.ErrorCode.BAD_REQUEST


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert codec.decode(b"\x91" * MAX_DEPTH + b"\xc0") is not None
    with pytest.raises(p.DecodeError, match="nested deeper"):
        codec.decode(b"\x91" * (MAX_DEPTH + 1) + b"\xc0")


def test_oversize_payload_is_too_large() -> None:
    data = codec.encode({"blob": "x" * 100})
    with pytest.raises(p.DecodeError) as info:
        codec.decode(data, max_size=len(data) - 1)
    assert info.value.code is p.ErrorCode.TOO_LARGE
    assert codec.decode(data, max_size=len(data)) == {"blob": "x" * 100}


def test_decode_map_rejects_other_top_level_values() -> None:
    with pytest.raises(p.DecodeError, match="must be a map, got list"):
        codec.decode_map(codec.encode([1, 2]))


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(p.DecodeError, match="expected bytes, got str"):
        codec.decode("{}")  # type: ignore[arg-type]  # the wrong type is the point


def test_decode_error_keeps_msgpack_cause() -> None:
    with pytest.raises(p.DecodeError) as info:
        codec.decode(b"\xc0\xc0")
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize(
    "value",
    [{"a": b"x"}, {1: "a"}, object(), 2**70, msgpack.ExtType(1, b""), [b""]],
    ids=["bytes value", "int key", "object", "huge int", "ext", "bytes in list"],
)
def test_encode_refuses_what_decode_would_refuse(value: Any) -> None:
    with pytest.raises(p.EncodeError) as info:
        codec.encode(value)
    assert info.value.code is p.ErrorCode.INTERNAL


def test_encode_reports_oversize_as_too_large() -> None:
    with pytest.raises(p.EncodeError) as info:
        codec.encode({"jobs": ["x" * 100]}, max_size=50)
    assert info.value.code is p.ErrorCode.TOO_LARGE


def test_encode_turns_enums_and_tuples_into_plain_values() -> None:
    assert codec.decode(codec.encode({"s": p.JobState.DONE, "t": (1, 2)})) == {
        "s": "done",
        "t": [1, 2],
    }


# --- requests -------------------------------------------------------------------------

EXAMPLE_ARGS = [
    p.PingArgs(),
    p.SubmitArgs(input="/data/in.fa", output="/data/out"),
    p.SubmitArgs(
        input="/data/in.fa",
        output="/data/out",
        profile="demo",
        esm="esm2_t36_3B_UR50D",
        dnabert="/models/dnabert-s",
        classifier="/models/300_model.pth",
        chunk_length=300,
        save_embeddings=True,
        checkpoint_every=1000,
        force=True,
    ),
    p.StatusArgs(job_id="j1"),
    p.ListArgs(),
    p.ListArgs(offset=10, limit=5),
    p.KillArgs(job_id="j1"),
    p.WorkersArgs(),
    p.ShutdownArgs(),
]


@pytest.mark.parametrize("args", EXAMPLE_ARGS, ids=lambda a: type(a).__name__)
def test_request_round_trip(args: p.OpArgs) -> None:
    request = p.Request.new(args)
    wire = codec.decode(request.encode())
    assert (wire["v"], wire["id"], wire["op"]) == (1, request.id, args.OP.value)
    assert p.decode_request(request.encode()) == request


@FAST
@given(requests)
def test_valid_requests_round_trip(request: p.Request) -> None:
    assert p.decode_request(request.encode()) == request


def test_optional_args_may_be_nil_or_absent() -> None:
    args = {"input": "/in.fa", "output": "/out", "profile": None, "force": None}
    request = p.parse_request(wire_request("submit", args))
    assert request.args == p.SubmitArgs(input="/in.fa", output="/out")


def test_to_wire_omits_unset_optional_args() -> None:
    wire = p.SubmitArgs(input="/in.fa", output="/out").to_wire()
    assert wire == {"input": "/in.fa", "output": "/out", "save_embeddings": False, "force": False}


BAD_REQUESTS: list[tuple[str, Any, p.ErrorCode, str, str]] = [
    ("not a map", ["ping"], p.ErrorCode.BAD_REQUEST, "request must be a map, got list", ""),
    (
        "no version",
        {"id": "r1", "op": "ping", "args": {}},
        p.ErrorCode.BAD_REQUEST,
        "field 'v' is missing",
        "r1",
    ),
    (
        "version 2",
        wire_request(v=2),
        p.ErrorCode.UNSUPPORTED_VERSION,
        "protocol version 2 is not supported (this daemon speaks 1)",
        "r1",
    ),
    (
        "version str",
        wire_request(v="1"),
        p.ErrorCode.BAD_REQUEST,
        "field 'v' must be an int, got str",
        "r1",
    ),
    (
        "version bool",
        wire_request(v=True),
        p.ErrorCode.BAD_REQUEST,
        "field 'v' must be an int, got bool",
        "r1",
    ),
    (
        "no id",
        {"v": 1, "op": "ping", "args": {}},
        p.ErrorCode.BAD_REQUEST,
        "field 'id' is missing",
        "",
    ),
    (
        "int id",
        wire_request(id=7),
        p.ErrorCode.BAD_REQUEST,
        "field 'id' must be a str, got int",
        "",
    ),
    (
        "empty id",
        wire_request(id=""),
        p.ErrorCode.BAD_REQUEST,
        "field 'id' must be 1 to 128 characters, got 0",
        "",
    ),
    (
        "long id",
        wire_request(id="x" * 129),
        p.ErrorCode.BAD_REQUEST,
        "field 'id' must be 1 to 128 characters, got 129",
        "",
    ),
    (
        "no op",
        {"v": 1, "id": "r1", "args": {}},
        p.ErrorCode.BAD_REQUEST,
        "field 'op' is missing",
        "r1",
    ),
    (
        "no args",
        {"v": 1, "id": "r1", "op": "ping"},
        p.ErrorCode.BAD_REQUEST,
        "field 'args' is missing",
        "r1",
    ),
    (
        "extra envelope key",
        wire_request(deadline=5),
        p.ErrorCode.BAD_REQUEST,
        "unknown field in request: 'deadline'",
        "r1",
    ),
    (
        "op not str",
        wire_request(op=["ping"]),
        p.ErrorCode.BAD_REQUEST,
        "field 'op' must be a str, got list",
        "r1",
    ),
    (
        "unknown op",
        wire_request(op="reboot"),
        p.ErrorCode.UNKNOWN_OP,
        "unknown op 'reboot' (known: ping, submit, status, list, kill, workers, shutdown)",
        "r1",
    ),
    (
        "args list",
        wire_request(args=[]),
        p.ErrorCode.BAD_REQUEST,
        "field 'args' must be a map, got list",
        "r1",
    ),
    (
        "args nil",
        wire_request(args=None) | {"args": None},
        p.ErrorCode.BAD_REQUEST,
        "field 'args' must be a map, got nil",
        "r1",
    ),
    (
        "ping extra",
        wire_request(args={"x": 1}),
        p.ErrorCode.BAD_REQUEST,
        "unknown field in 'args': 'x'",
        "r1",
    ),
    (
        "submit extras",
        wire_request("submit", {"input": "/a", "output": "/b", "gpu": 1, "b": 2}),
        p.ErrorCode.BAD_REQUEST,
        "unknown fields in 'args': 'b', 'gpu'",
        "r1",
    ),
    (
        "submit missing",
        wire_request("submit", {"input": "/a"}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.output' is missing",
        "r1",
    ),
    (
        "submit nil",
        wire_request("submit", {"input": "/a", "output": None}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.output' is nil",
        "r1",
    ),
    (
        "relative input",
        wire_request("submit", {"input": "in.fa", "output": "/b"}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.input' must be an absolute path, got 'in.fa'",
        "r1",
    ),
    (
        "NUL in path",
        wire_request("submit", {"input": "/a\0b", "output": "/b"}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.input' must be an absolute path",
        "r1",
    ),
    (
        "path not str",
        wire_request("submit", {"input": 5, "output": "/b"}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.input' must be a str, got int",
        "r1",
    ),
    (
        "chunk length",
        wire_request("submit", {"input": "/a", "output": "/b", "chunk_length": 400}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.chunk_length' must be 300 or 500, got 400",
        "r1",
    ),
    (
        "precision",
        wire_request("submit", {"input": "/a", "output": "/b", "precision": "fp16"}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.precision' must be 'fp32', 'tf32' or 'bf16', got 'fp16'",
        "r1",
    ),
    (
        "chunk length str",
        wire_request("submit", {"input": "/a", "output": "/b", "chunk_length": "300"}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.chunk_length' must be 300 or 500, got '300'",
        "r1",
    ),
    (
        "bool as int",
        wire_request("submit", {"input": "/a", "output": "/b", "checkpoint_every": True}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.checkpoint_every' must be an int, got bool",
        "r1",
    ),
    (
        "zero checkpoint",
        wire_request("submit", {"input": "/a", "output": "/b", "checkpoint_every": 0}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.checkpoint_every' must be a positive int below 2**63, got 0",
        "r1",
    ),
    (
        "int as bool",
        wire_request("submit", {"input": "/a", "output": "/b", "save_embeddings": 1}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.save_embeddings' must be a bool, got int",
        "r1",
    ),
    (
        "empty profile",
        wire_request("submit", {"input": "/a", "output": "/b", "profile": ""}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.profile' must be a non-empty string, got ''",
        "r1",
    ),
    (
        "status no job",
        wire_request("status"),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.job_id' is missing",
        "r1",
    ),
    (
        "kill int job",
        wire_request("kill", {"job_id": 3}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.job_id' must be a str, got int",
        "r1",
    ),
    (
        "negative offset",
        wire_request("list", {"offset": -1}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.offset' must be a non-negative int below 2**63, got -1",
        "r1",
    ),
    (
        "offset past SQLite's integers",
        wire_request("list", {"offset": 2**63}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.offset' must be a non-negative int below 2**63, got 9223372036854775808",
        "r1",
    ),
    (
        "zero limit",
        wire_request("list", {"limit": 0}),
        p.ErrorCode.BAD_REQUEST,
        "field 'args.limit' must be a positive int below 2**63, got 0",
        "r1",
    ),
]


@pytest.mark.parametrize(
    ("message", "code", "text", "request_id"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_parse_request_errors(message: Any, code: p.ErrorCode, text: str, request_id: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.parse_request(message)
    assert info.value.code is code
    assert text in info.value.message
    assert info.value.request_id == request_id


@FAST
@given(st.dictionaries(st.sampled_from(["v", "id", "op", "args", "x"]), wire_values))
def test_parse_request_raises_only_protocol_errors(message: dict[str, Any]) -> None:
    try:
        p.parse_request(message)
    except p.ProtocolError as e:
        error = e
    else:
        return
    assert error.code in p.ErrorCode
    assert error.request_id in ("", message.get("id"))


def test_decode_request_of_oversize_payload_is_too_large() -> None:
    data = p.Request.new(p.StatusArgs(job_id="j" * 200)).encode()
    with pytest.raises(p.DecodeError) as info:
        p.decode_request(data, max_size=100)
    assert info.value.code is p.ErrorCode.TOO_LARGE
    assert info.value.request_id == ""


# --- replies ----------------------------------------------------------------------------

STATUS: p.JobStatus = {
    "job_id": "j1",
    "state": p.JobState.RUNNING,
    "records_total": 10,
    "records_done": 4,
    "frames_done": 17,
    "restarts": 1,
}
WORKER: p.WorkerInfo = {
    "id": "w0",
    "pid": 4242,
    "device": "cuda:0",
    "state": p.WorkerState.BUSY,
    "job_id": "j1",
    "unit": 3,
}
EXAMPLE_RESULTS: list[tuple[p.Op, dict[str, Any]]] = [
    (p.Op.PING, {}),
    (p.Op.SUBMIT, {"job_id": "j1"}),
    (p.Op.STATUS, dict(STATUS)),
    (p.Op.STATUS, {**STATUS, "state": p.JobState.FAILED, "error": "unit 2 failed 3 times"}),
    (p.Op.LIST, {"jobs": [dict(STATUS)], "total": 1}),
    (p.Op.KILL, {"job_id": "j1", "state": p.JobState.KILLED}),
    (p.Op.WORKERS, {"workers": [dict(WORKER), {**WORKER, "pid": None, "state": "restarting"}]}),
    (p.Op.SHUTDOWN, {}),
]


@pytest.mark.parametrize(("op", "result"), EXAMPLE_RESULTS)
def test_ok_reply_round_trip(op: p.Op, result: dict[str, Any]) -> None:
    wire = p.ok_reply("r1", result)
    assert set(wire) == {"v", "id", "ok", "result", "error"}
    assert wire["error"] is None
    reply = p.decode_reply(codec.encode(wire))
    assert (reply.id, reply.ok) == ("r1", True)
    assert p.parse_result(op, reply.unwrap()) == result
    assert reply.to_wire() == codec.decode(codec.encode(wire))


@pytest.mark.parametrize("code", list(p.ErrorCode))
def test_error_reply_round_trip(code: p.ErrorCode) -> None:
    wire = p.error_reply("r1", code, "explained")
    assert wire["result"] is None
    assert wire["error"] == {"code": code.value, "message": "explained"}
    reply = p.decode_reply(codec.encode(wire))
    with pytest.raises(p.RemoteError) as info:
        reply.unwrap()
    assert (info.value.code, info.value.message, info.value.request_id) == (code, "explained", "r1")


def test_parse_result_keeps_unknown_fields_and_checks_known_ones() -> None:
    assert p.parse_result(p.Op.SUBMIT, {"job_id": "j1", "eta": 5}) == {"job_id": "j1", "eta": 5}
    with pytest.raises(p.ProtocolError, match=r"field 'result.jobs\[0\].state' must be"):
        p.parse_result(p.Op.LIST, {"jobs": [{**STATUS, "state": "paused"}]})


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        ({"v": 1, "id": "r", "ok": True, "result": None, "error": None}, "must carry a result"),
        (
            {
                "v": 1,
                "id": "r",
                "ok": False,
                "result": {},
                "error": {"code": "internal", "message": "m"},
            },
            "must carry a result",
        ),
        ({"v": 1, "id": "r", "ok": "yes", "result": {}}, "field 'ok' must be a bool"),
        ({"v": 2, "id": "r", "ok": True, "result": {}}, "field 'v' must be 1"),
        (
            {"v": 1, "id": "r", "ok": False, "error": {"code": "oops", "message": "m"}},
            "field 'error.code' must be 'bad_request'",
        ),
        ({"v": 1, "id": "r", "ok": True, "result": {}, "extra": 1}, "unknown field: 'extra'"),
    ],
)
def test_malformed_replies_are_protocol_errors(reply: dict[str, Any], text: str) -> None:
    with pytest.raises(p.ProtocolError, match=text):
        p.parse_reply(reply)


def test_job_state_terminal() -> None:
    assert {s for s in p.JobState if s.is_terminal} == {"done", "failed", "killed"}


# --- events ----------------------------------------------------------------------------


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


@pytest.mark.parametrize(("frames", "code", "text"), BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_bad_events(frames: list[bytes], code: p.ErrorCode, text: str) -> None:
    with pytest.raises(p.ProtocolError, match=text) as info:
        p.decode_event(frames)
    assert info.value.code is code


# --- daemon <-> worker -------------------------------------------------------------------

SHA = "0123456789abcdef" * 4
MODELS = p.WireModelSpec(
    esm="esm2_t36_3B_UR50D", dnabert="/m/dnabert", classifier="/m/500.pth", chunk_length=500
)
FROM_WORKER: list[p.FromWorker] = [
    p.Hello(worker_id="w0", pid=123, device="cuda:0", versions={"virnuc": "0.1.0"}),
    p.Hello(worker_id="w0", pid=123, device="cpu", versions={}, models={"esm": "x", "dims": 8}),
    p.Heartbeat(worker_id="w0"),
    p.Heartbeat(worker_id="w0", seq=9),
    p.ModelsLoaded(worker_id="w0", models={"esm": "esm2_t36_3B_UR50D"}),
    p.BatchDone(job_id="j1", unit_id=2, records_done=64, frames_done=300),
    p.Checkpoint(
        job_id="j1",
        unit_id=2,
        first_record=100,
        record_count=50,
        end_offset=9000,
        path="/s/j1/parts/2-100.h5",
        size=4096,
        sha256=SHA,
        frames=180,
    ),
    p.UnitDone(job_id="j1", unit_id=2),
    p.WorkerError(message="CUDA out of memory", fatal=False, job_id="j1", unit_id=2),
    p.WorkerError(message="cannot load ESM", fatal=True),
]
FROM_DAEMON: list[p.FromDaemon] = [
    p.Assign(
        job_id="j1",
        unit_id=2,
        input="/data/in.fa",
        start_offset=8000,
        start_record=100,
        record_count=200,
        models=MODELS,
        save_embeddings=True,
        checkpoint_every=50,
        parts_dir="/s/j1/parts",
    ),
    p.Assign(
        job_id="j2",
        unit_id=0,
        input="/data/in.fa",
        start_offset=0,
        start_record=0,
        record_count=1,
        models=p.WireModelSpec(
            esm="/c/esm.pt",
            dnabert="/c/bert",
            classifier="/c/clf.pth",
            chunk_length=300,
            profile="demo",
        ),
        save_embeddings=False,
        checkpoint_every=1,
        parts_dir="/s/j2/parts",
    ),
    p.Cancel(job_id="j1"),
    p.WorkerShutdown(),
]


@pytest.mark.parametrize("message", FROM_WORKER, ids=lambda m: m.TYPE)
def test_worker_messages_round_trip(message: p.FromWorker) -> None:
    data = message.encode()
    wire = codec.decode(data)
    assert (wire["type"], wire["v"]) == (message.TYPE, 1)
    assert p.decode_from_worker(data) == message
    assert p.parse_worker_message(wire) == message
    with pytest.raises(p.ProtocolError, match="unexpected message type"):
        p.decode_from_daemon(data)


@pytest.mark.parametrize("message", FROM_DAEMON, ids=lambda m: m.TYPE)
def test_daemon_messages_round_trip(message: p.FromDaemon) -> None:
    data = message.encode()
    assert p.decode_from_daemon(data) == message
    with pytest.raises(p.ProtocolError, match="unexpected message type"):
        p.decode_from_worker(data)


def _wire(message: p.WorkerMessage, **changes: Any) -> dict[str, Any]:
    wire = message.to_wire()
    wire.update(changes)
    return {k: v for k, v in wire.items() if v is not ...}


CHECKPOINT = FROM_WORKER[6]
BAD_WORKER_MESSAGES: dict[str, tuple[Any, p.ErrorCode, str]] = {
    "not a map": ([1], p.ErrorCode.BAD_REQUEST, "message must be a map, got list"),
    "no version": (_wire(CHECKPOINT, v=...), p.ErrorCode.UNSUPPORTED_VERSION, "version None"),
    "version 2": (_wire(CHECKPOINT, v=2), p.ErrorCode.UNSUPPORTED_VERSION, "version 2"),
    "no type": (_wire(CHECKPOINT, type=...), p.ErrorCode.BAD_REQUEST, "unexpected message type"),
    "unknown type": (
        _wire(CHECKPOINT, type="reboot"),
        p.ErrorCode.BAD_REQUEST,
        "unexpected message type 'reboot' (expected one of: assign, batch_done",
    ),
    "bad hash": (
        _wire(CHECKPOINT, sha256=SHA.upper()),
        p.ErrorCode.BAD_REQUEST,
        "checkpoint message: field 'sha256' must be 64 lowercase hex digits",
    ),
    "relative path": (
        _wire(CHECKPOINT, path="parts/x"),
        p.ErrorCode.BAD_REQUEST,
        "checkpoint message: field 'path' must be an absolute path",
    ),
    "missing field": (
        _wire(CHECKPOINT, end_offset=...),
        p.ErrorCode.BAD_REQUEST,
        "checkpoint message: field 'end_offset' is missing",
    ),
    "extra field": (
        _wire(CHECKPOINT, crc=1),
        p.ErrorCode.BAD_REQUEST,
        "checkpoint message: unknown field: 'crc'",
    ),
    "negative count": (
        _wire(CHECKPOINT, frames=-1),
        p.ErrorCode.BAD_REQUEST,
        "field 'frames' must be a non-negative int",
    ),
    "nested model": (
        _wire(FROM_DAEMON[0], models={**MODELS.to_wire(), "chunk_length": 1}),
        p.ErrorCode.BAD_REQUEST,
        "assign message: field 'models.chunk_length' must be 300 or 500, got 1",
    ),
    "nested extra": (
        _wire(FROM_DAEMON[0], models={**MODELS.to_wire(), "x": 1}),
        p.ErrorCode.BAD_REQUEST,
        "assign message: unknown field in 'models': 'x'",
    ),
    "empty profile": (
        _wire(FROM_DAEMON[0], models={**MODELS.to_wire(), "profile": ""}),
        p.ErrorCode.BAD_REQUEST,
        "assign message: field 'models.profile' must be a non-empty string",
    ),
    "version map": (
        _wire(FROM_WORKER[0], versions={"torch": 2}),
        p.ErrorCode.BAD_REQUEST,
        "hello message: field 'versions.torch' must be a str, got int",
    ),
}


@pytest.mark.parametrize(
    ("message", "code", "text"), BAD_WORKER_MESSAGES.values(), ids=BAD_WORKER_MESSAGES.keys()
)
def test_bad_worker_messages(message: Any, code: p.ErrorCode, text: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.parse_worker_message(message)
    assert info.value.code is code
    assert text in info.value.message


@FAST
@given(st.dictionaries(st.sampled_from(["type", "v", "job_id", "unit_id", "x"]), wire_values))
def test_parse_worker_message_raises_only_protocol_errors(message: dict[str, Any]) -> None:
    with contextlib.suppress(p.ProtocolError):
        p.parse_worker_message(message)


# --- transport and facade ---------------------------------------------------------------


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


# --- real sockets: the frame layout and the documented client example -------------------


class FakeDaemon:
    """A ROUTER on ``ipc://{state_dir}/control.sock`` answering with the protocol helpers.

    ``submit`` returns job "j1"; ``status`` says running once, then done. Anything
    malformed is answered or dropped exactly as docs/protocol.md says, and the loop
    keeps serving. Runs in a thread; ``stop()`` joins it and closes everything.
    """

    def __init__(self, state_dir: Path) -> None:
        self.endpoint = f"ipc://{state_dir}/control.sock"
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.bind(self.endpoint)
        self.dropped = 0
        self.status_calls = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            if self.sock.poll(20):
                self._handle(self.sock.recv_multipart())

    def _handle(self, frames: list[bytes]) -> None:
        try:
            routing, payload = p.split_request_frames(frames)
        except p.DecodeError:
            self.dropped += 1
            return
        try:
            request = p.decode_request(payload)
            reply = p.ok_reply(request.id, self._result(request.args))
        except p.ProtocolError as e:
            reply = p.error_reply(e.request_id, e.code, e.message)
        self.sock.send_multipart(p.reply_frames(routing, p.encode(reply)))

    def _result(self, args: p.OpArgs) -> dict[str, Any]:
        if isinstance(args, p.SubmitArgs):
            return {"job_id": "j1"}
        if isinstance(args, p.StatusArgs):
            self.status_calls += 1
            state = p.JobState.RUNNING if self.status_calls == 1 else p.JobState.DONE
            return {**STATUS, "state": state}
        return {}

    def stop(self) -> None:
        self.running = False
        self.thread.join(timeout=5)
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(tmp_path)
    yield fake
    fake.stop()


@pytest.fixture
def dealer(daemon: FakeDaemon) -> Iterator[zmq.Socket[bytes]]:
    sock = daemon.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(daemon.endpoint)
    yield sock
    sock.close(linger=0)


def test_documented_client_example_runs(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    example = doc.split("## Client example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(example.strip().splitlines()) <= 20
    monkeypatch.setenv("VIRNUC_STATE_DIR", str(Path(daemon.endpoint[len("ipc://") :]).parent))
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


def test_the_wire_and_the_pipeline_know_the_same_precisions() -> None:
    from virnuc.pipeline.spec import PRECISIONS as PIPELINE_PRECISIONS
    from virnuc.protocol.constants import PRECISIONS

    assert PRECISIONS == PIPELINE_PRECISIONS
