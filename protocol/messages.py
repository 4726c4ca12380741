"""The control protocol: request/reply envelope, operations, arguments and results.

A client sends ``{"v": 1, "id": str, "op": str, "args": map}`` on a REQ (or DEALER)
socket; the daemon answers ``{"v": 1, "id": <same>, "ok": bool, "result": map|nil,
"error": {"code": str, "message": str}|nil}``. Arguments are checked here, field by
field, so the daemon's handlers receive typed, valid objects and only judge meaning
(does the file exist, is the job still running). The job and worker states and
status maps that results carry are status.py's, shared with the events.
"""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum, unique
from typing import Any, ClassVar, Literal, NotRequired, TypedDict

from . import codec
from .codec import Buffer, type_name
from .constants import (
    KEY_ARGS,
    KEY_CODE,
    KEY_ERROR,
    KEY_ID,
    KEY_MESSAGE,
    KEY_OK,
    KEY_OP,
    KEY_RESULT,
    KEY_VERSION,
    MAX_MESSAGE_SIZE,
    MAX_REQUEST_ID_LEN,
    PROTOCOL_VERSION,
    UNKNOWN_REQUEST_ID,
)
from .errors import ErrorCode, ProtocolError, RemoteError
from .schema import (
    AbsPath,
    Count,
    NonEmptyStr,
    PositiveInt,
    WireModel,
    check_fields,
    check_value,
    fail,
    reject_unknown,
    short_repr,
)
from .status import JobState, JobStatus, WorkerInfo

# --- results (built by the daemon, read by clients) --------------------------------


class PingResult(TypedDict):
    """``ping`` answers an empty map; it proves the daemon's loop is responsive."""


class SubmitResult(TypedDict):
    job_id: str


class ListResult(TypedDict):
    jobs: list[JobStatus]  # in submission order, oldest first
    total: NotRequired[int]  # number of jobs before paging


class KillResult(TypedDict):
    job_id: str
    state: JobState


class WorkersResult(TypedDict):
    workers: list[WorkerInfo]


class ShutdownResult(TypedDict):
    """``shutdown`` answers an empty map, then the daemon stops in two stages."""


# --- operations and their arguments -----------------------------------------------


@unique
class Op(StrEnum):
    """The operation names; fixed by docs/architecture.md §3."""

    PING = "ping"
    SUBMIT = "submit"
    STATUS = "status"
    LIST = "list"
    KILL = "kill"
    WORKERS = "workers"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class PingArgs(WireModel):
    """``ping {}`` -> ``{}``."""

    OP: ClassVar[Literal[Op.PING]] = Op.PING


@dataclass(frozen=True, kw_only=True)
class SubmitArgs(WireModel):
    """``submit`` -> ``{job_id}``. Unset model options fall back to the profile.

    The input is ``input`` (one file) or ``inputs`` (one or more, in the order their
    records appear in the outputs); exactly one of the two is given. Paths are
    absolute because the daemon's working directory is not the client's. ``esm`` and
    ``dnabert`` are model names or absolute paths; the client resolves relative paths
    before sending.

    ``models`` names one of the daemon's configured model sets instead of the models
    themselves, so it excludes the options that choose models (``MODEL_CHOICES``);
    ``precision`` may go with it. With no model option at all the daemon uses its
    ``default`` set, if it has one.
    """

    OP: ClassVar[Literal[Op.SUBMIT]] = Op.SUBMIT
    input: AbsPath | None = None
    inputs: list[AbsPath] | None = None
    output: AbsPath
    models: NonEmptyStr | None = None  # a model set of the daemon's config
    profile: NonEmptyStr | None = None
    esm: NonEmptyStr | None = None
    dnabert: NonEmptyStr | None = None
    classifier: AbsPath | None = None
    chunk_length: Literal[300, 500] | None = None
    precision: Literal["fp32", "tf32", "bf16"] | None = None  # default: the daemon's
    save_embeddings: bool = False
    checkpoint_every: PositiveInt | None = None  # records per checkpoint part
    force: bool = False  # replace outputs already in ``output``

    def __post_init__(self) -> None:
        if (self.input is None) == (self.inputs is None):
            fail("inputs", "or 'input' must be given, exactly one of the two")
        if self.inputs is not None:
            if not self.inputs:
                fail("inputs", "must list at least one file")
            seen: set[str] = set()
            for path in self.inputs:
                if path in seen:
                    fail("inputs", f"lists {short_repr(path)} more than once")
                seen.add(path)
        if self.models is not None and (named := self.model_choices()):
            fail("models", f"names a model set, which chooses the models: leave out {named}")

    def model_choices(self) -> str:
        """The options given that choose models (``--profile``, ``--classifier``, ...),
        as a list for messages; "" when none is."""
        return ", ".join(name for name in MODEL_CHOICES if getattr(self, name) is not None)

    @property
    def paths(self) -> tuple[str, ...]:
        """The job's input files, in order: ``inputs``, or ``input`` alone."""
        if self.inputs is not None:
            return tuple(self.inputs)
        assert self.input is not None  # __post_init__
        return (self.input,)


#: The submit options that choose models, which a model set (``models``) replaces.
MODEL_CHOICES = ("profile", "esm", "dnabert", "classifier", "chunk_length")


@dataclass(frozen=True)
class StatusArgs(WireModel):
    """``status {job_id}`` -> JobStatus."""

    OP: ClassVar[Literal[Op.STATUS]] = Op.STATUS
    job_id: NonEmptyStr


@dataclass(frozen=True)
class ListArgs(WireModel):
    """``list {offset?, limit?}`` -> ``{jobs, total}``; no limit means all jobs."""

    OP: ClassVar[Literal[Op.LIST]] = Op.LIST
    offset: Count = 0
    limit: PositiveInt | None = None


@dataclass(frozen=True)
class KillArgs(WireModel):
    """``kill {job_id}`` -> ``{job_id, state}``."""

    OP: ClassVar[Literal[Op.KILL]] = Op.KILL
    job_id: NonEmptyStr


@dataclass(frozen=True)
class WorkersArgs(WireModel):
    """``workers {}`` -> ``{workers}``."""

    OP: ClassVar[Literal[Op.WORKERS]] = Op.WORKERS


@dataclass(frozen=True)
class ShutdownArgs(WireModel):
    """``shutdown {}`` -> ``{}``: the same command SIGTERM enqueues."""

    OP: ClassVar[Literal[Op.SHUTDOWN]] = Op.SHUTDOWN


OpArgs = PingArgs | SubmitArgs | StatusArgs | ListArgs | KillArgs | WorkersArgs | ShutdownArgs


@dataclass(frozen=True)
class OpSpec:
    """What one operation takes and returns; the table below is the op registry."""

    args: type[OpArgs]
    result: type


OPS: dict[Op, OpSpec] = {
    Op.PING: OpSpec(PingArgs, PingResult),
    Op.SUBMIT: OpSpec(SubmitArgs, SubmitResult),
    Op.STATUS: OpSpec(StatusArgs, JobStatus),
    Op.LIST: OpSpec(ListArgs, ListResult),
    Op.KILL: OpSpec(KillArgs, KillResult),
    Op.WORKERS: OpSpec(WorkersArgs, WorkersResult),
    Op.SHUTDOWN: OpSpec(ShutdownArgs, ShutdownResult),
}


# --- the envelope ------------------------------------------------------------------


def new_request_id() -> str:
    """A fresh, unique request id (32 hex digits)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Request:
    """One validated control request. Build with ``Request.new(args)``."""

    id: str
    args: OpArgs

    @property
    def op(self) -> Op:
        return self.args.OP

    @classmethod
    def new(cls, args: OpArgs, request_id: str | None = None) -> "Request":
        return cls(request_id or new_request_id(), args)

    def to_wire(self) -> dict[str, Any]:
        return {
            KEY_VERSION: PROTOCOL_VERSION,
            KEY_ID: self.id,
            KEY_OP: self.op.value,
            KEY_ARGS: self.args.to_wire(),
        }

    def encode(self) -> bytes:
        return codec.encode(self.to_wire())


_REQUEST_KEYS = (KEY_VERSION, KEY_ID, KEY_OP, KEY_ARGS)


def parse_request(data: Any) -> Request:
    """Validate a decoded request map, in the order that gives the best error.

    Raises ``ProtocolError``: ``bad_request`` (shape, types, unknown fields),
    ``unsupported_version``, ``unknown_op``. ``err.request_id`` holds the request's
    id when it was readable, so the reply can still be matched by the client.
    """
    request_id = _readable_id(data)
    try:
        return _parse_request(data, request_id)
    except ProtocolError as e:
        e.request_id = request_id
        raise


def _readable_id(data: Any) -> str:
    """The request's id if it is usable in a reply, else ``""``."""
    if isinstance(data, dict):
        rid = data.get(KEY_ID)
        if isinstance(rid, str) and len(rid) <= MAX_REQUEST_ID_LEN:
            return rid
    return UNKNOWN_REQUEST_ID


def _parse_request(data: Any, request_id: str) -> Request:
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"request must be a map, got {type_name(data)}")
    _check_version(data)
    _check_envelope_keys(data)
    _check_id(data)
    op = _check_op(data[KEY_OP])
    args = check_value(dict[str, Any], data[KEY_ARGS], KEY_ARGS)
    return Request(request_id, OPS[op].args.from_wire(args, KEY_ARGS))


def _check_version(data: dict[str, Any]) -> None:
    """Checked first: a future version may have a different envelope altogether."""
    if KEY_VERSION not in data:
        fail(KEY_VERSION, "is missing")
    version = check_value(int, data[KEY_VERSION], KEY_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version} is not supported (this daemon speaks {PROTOCOL_VERSION})",
        )


def _check_envelope_keys(data: dict[str, Any]) -> None:
    for key in _REQUEST_KEYS:
        if key not in data:
            fail(key, "is missing")
    reject_unknown(_REQUEST_KEYS, data, "request")


def _check_id(data: dict[str, Any]) -> None:
    rid = check_value(str, data[KEY_ID], KEY_ID)
    if not 0 < len(rid) <= MAX_REQUEST_ID_LEN:
        fail(KEY_ID, f"must be 1 to {MAX_REQUEST_ID_LEN} characters, got {len(rid)}")


def _check_op(value: Any) -> Op:
    name = check_value(str, value, KEY_OP)
    try:
        return Op(name)
    except ValueError:
        known = ", ".join(op.value for op in Op)
        raise ProtocolError(
            ErrorCode.UNKNOWN_OP, f"unknown op {short_repr(name)} (known: {known})"
        ) from None


def decode_request(data: Buffer, max_size: int = MAX_MESSAGE_SIZE) -> Request:
    """Decode and validate one request payload; every failure is a ``ProtocolError``."""
    return parse_request(codec.decode_map(data, max_size))


# --- replies -----------------------------------------------------------------------


def ok_reply(request_id: str, result: Mapping[str, object]) -> dict[str, Any]:
    """The wire map of a successful reply. ``result`` is a map (one of the *Result)."""
    return {
        KEY_VERSION: PROTOCOL_VERSION,
        KEY_ID: request_id,
        KEY_OK: True,
        KEY_RESULT: dict(result),
        KEY_ERROR: None,
    }


def error_reply(request_id: str, code: ErrorCode, message: str) -> dict[str, Any]:
    """The wire map of a failed reply; use ``""`` when the request id was unreadable."""
    return {
        KEY_VERSION: PROTOCOL_VERSION,
        KEY_ID: request_id,
        KEY_OK: False,
        KEY_RESULT: None,
        KEY_ERROR: {KEY_CODE: ErrorCode(code).value, KEY_MESSAGE: message},
    }


@dataclass(frozen=True)
class ErrorInfo(WireModel):
    """The ``error`` map of a failed reply."""

    code: ErrorCode
    message: str


@dataclass(frozen=True)
class Reply(WireModel):
    """A validated reply, as a client sees it."""

    v: Literal[1]
    id: str
    ok: bool
    result: dict[str, Any] | None = None
    error: ErrorInfo | None = None

    def to_wire(self) -> dict[str, Any]:
        """The wire map; unlike other messages a reply always carries both keys."""
        if self.error is not None:
            return error_reply(self.id, self.error.code, self.error.message)
        return ok_reply(self.id, self.result or {})

    def unwrap(self) -> dict[str, Any]:
        """The result map, or ``RemoteError`` carrying the daemon's code and message."""
        if self.error is not None:
            raise RemoteError(self.error.code, self.error.message, request_id=self.id)
        return self.result or {}


def parse_reply(data: Any) -> Reply:
    """Validate a decoded reply map (client side); ``ProtocolError`` if malformed.

    An unknown error code is a protocol error too: the set is closed for version 1.
    """
    reply = Reply.from_wire(data)
    if reply.ok != (reply.error is None) or reply.ok != (reply.result is not None):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            "reply must carry a result map when ok is true and an error map when false",
        )
    return reply


def decode_reply(data: Buffer, max_size: int = MAX_MESSAGE_SIZE) -> Reply:
    """Decode and validate one reply payload (client side)."""
    return parse_reply(codec.decode_map(data, max_size))


def parse_result(op: Op, result: dict[str, Any]) -> dict[str, Any]:
    """Check an ``op``'s result map against its documented shape (client side).

    Fields the daemon added beyond the documented ones are kept, not rejected, so
    older clients keep working with newer daemons. Cast the return value to the
    op's TypedDict (e.g. ``JobStatus``).
    """
    return check_fields(OPS[op].result, result, KEY_RESULT, "keep")
