"""protocol/worker.py: the daemon<->worker messages, built, encoded, decoded and
validated in memory, including every way a peer can get them wrong.
"""

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import virnuc.protocol as p
from virnuc.protocol import codec

from tests.protocol.samples import FAST, wire_values

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
