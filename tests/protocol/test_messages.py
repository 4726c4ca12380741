"""protocol/messages.py: the control envelope, ops and replies (the daemon<->worker
messages are in test_worker.py, job states in test_status.py).

No sockets here: everything the daemon and clients exchange is built, encoded,
decoded and validated in memory, including every way a peer can get it wrong.
"""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import virnuc.protocol as p
from virnuc.protocol import codec

from tests.protocol.samples import FAST, STATUS, WORKER, wire_values

# --- strategies ------------------------------------------------------------------------

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


def test_a_submit_naming_a_model_set_may_name_its_precision_too() -> None:
    args = {"input": "/in.fa", "output": "/out", "models": "default", "precision": "bf16"}
    request = p.parse_request(wire_request("submit", args))
    assert request.args == p.SubmitArgs(
        input="/in.fa", output="/out", models="default", precision="bf16"
    )


def test_a_submit_naming_a_model_set_and_models_is_refused_naming_them() -> None:
    args = {"input": "/in.fa", "output": "/out", "models": "default"}
    args |= {"classifier": "/m/300_model.pth", "chunk_length": 300}
    with pytest.raises(p.ProtocolError) as refused:
        p.parse_request(wire_request("submit", args))
    assert refused.value.code == p.ErrorCode.BAD_REQUEST
    assert "field 'models' names a model set" in refused.value.message
    assert "leave out classifier, chunk_length" in refused.value.message


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
