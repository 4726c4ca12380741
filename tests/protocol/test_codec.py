"""The wire codec: msgpack with limits. Every value the wire carries round-trips, and
whatever else arrives (truncated, oversize, too deep, not msgpack) is a DecodeError.
"""

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import virnuc.protocol as p
from virnuc.protocol import codec
from virnuc.protocol.constants import MAX_DEPTH

from tests.protocol.samples import FAST, wire_values


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
