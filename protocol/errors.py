"""The closed set of error codes and every exception the protocol layer raises.

Codes are part of the documented wire contract (docs/protocol.md): scripts branch on
them, so adding or renaming one is a protocol change. Exceptions carry a code so that
whoever catches one can answer the peer without a second mapping table.
"""

from enum import StrEnum, unique

from .constants import UNKNOWN_REQUEST_ID


@unique
class ErrorCode(StrEnum):
    """Why a request failed; the ``error.code`` of a reply."""

    #: The message is not a well-formed request: not msgpack, not a map, a missing,
    #: wrongly typed or unknown field, or a value outside its range (relative path,
    #: chunk_length 400...). Retrying the same bytes will fail the same way.
    BAD_REQUEST = "bad_request"
    #: The request's ``v`` is not a version this daemon speaks.
    UNSUPPORTED_VERSION = "unsupported_version"
    #: The request's ``op`` is a string but not an operation this daemon knows.
    UNKNOWN_OP = "unknown_op"
    #: Well-formed, but what it points at is unusable: the input is missing, not
    #: readable or not FASTA; the output directory cannot be created; a model or
    #: profile does not exist.
    INVALID_INPUT = "invalid_input"
    #: The job (or other object) named by the request does not exist.
    NOT_FOUND = "not_found"
    #: The request contradicts the current state: killing a job that already ended,
    #: submitting into an output directory another job is writing or that holds
    #: outputs without ``force``.
    CONFLICT = "conflict"
    #: The daemon's policy refuses the request (e.g. a path outside the directories
    #: it is configured to use, or an op it is configured not to serve).
    FORBIDDEN = "forbidden"
    #: The request, or the reply it would need, exceeds the maximum message size.
    TOO_LARGE = "too_large"
    #: The daemon is shutting down and no longer takes this request.
    STOPPING = "stopping"
    #: The daemon's state disk is (nearly) full, so it cannot record a new job; the
    #: message says how much is free. Retry once space is freed.
    NO_SPACE = "no_space"
    #: A bug or unexpected failure inside the daemon; it is logged with details.
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A message broke the protocol; the base of every error in this package.

    Raised by the validators in ``messages``, ``events`` and ``worker``. The daemon
    answers it with ``error_reply(err.request_id, err.code, err.message)``.
    ``request_id`` is the id of the offending request when it could be read, else "".
    """

    def __init__(
        self, code: ErrorCode, message: str, *, request_id: str = UNKNOWN_REQUEST_ID
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class DecodeError(ProtocolError):
    """Bytes that are not an acceptable msgpack message.

    Raised only by ``codec.decode``/``codec.decode_map`` (and the frame helpers that
    call them), for every failure: not msgpack, truncated, trailing data, too large,
    too deep, ext types, non-string keys, ... Its code is ``bad_request`` or
    ``too_large``. The underlying msgpack exception, if any, is its ``__cause__``.
    """

    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_REQUEST) -> None:
        super().__init__(code, message)


class EncodeError(ProtocolError):
    """A value that cannot go on the wire, or would be larger than allowed.

    Raised only by ``codec.encode``. Usually a bug in the caller (``internal``),
    except for an over-size reply, which the daemon answers with ``too_large``.
    """

    def __init__(self, message: str, code: ErrorCode = ErrorCode.INTERNAL) -> None:
        super().__init__(code, message)


class RemoteError(ProtocolError):
    """The daemon answered a request with ``ok: false``.

    Raised on the client side by ``Reply.unwrap()``; carries the reply's code and
    message unchanged so the CLI can map codes to exit statuses.
    """
