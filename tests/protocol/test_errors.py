"""protocol/errors.py: the error codes on the wire and the errors that carry them."""

from __future__ import annotations

import virnuc.protocol as p


def test_the_error_codes_are_the_wire_strings_clients_map_to_exit_statuses() -> None:
    assert {code.value for code in p.ErrorCode} == {
        "bad_request",
        "unsupported_version",
        "unknown_op",
        "invalid_input",
        "not_found",
        "conflict",
        "forbidden",
        "too_large",
        "stopping",
        "no_space",
        "internal",
    }


def test_a_protocol_error_carries_code_message_and_request_id() -> None:
    error = p.ProtocolError(p.ErrorCode.NOT_FOUND, "no job 'j9'", request_id="r1")
    assert (error.code, error.message, error.request_id) == ("not_found", "no job 'j9'", "r1")
    assert str(error) == "not_found: no job 'j9'"
    assert p.ProtocolError(p.ErrorCode.INTERNAL, "x").request_id == ""  # id unreadable


def test_codec_errors_default_to_bad_request_and_internal() -> None:
    assert p.DecodeError("truncated").code is p.ErrorCode.BAD_REQUEST
    assert p.EncodeError("a set").code is p.ErrorCode.INTERNAL
    assert p.DecodeError("big", p.ErrorCode.TOO_LARGE).code is p.ErrorCode.TOO_LARGE
    assert isinstance(p.DecodeError("x"), p.ProtocolError)
    assert isinstance(p.EncodeError("x"), p.ProtocolError)
