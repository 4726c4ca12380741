"""Messages between the daemon and its worker processes (internal, but versioned).

Each worker connects a DEALER to the daemon's worker ROUTER and exchanges one msgpack
map per message, ``{"type": ..., "v": 1, ...fields}``. The classes below are the whole
schema: ``parse_worker_message`` finds the class by ``type`` and the shared validator
checks the fields against its annotations, so a new message is one dataclass.

Counting conventions: ``unit_id`` is the unit's index within its job; record indexes
(``start_record``, ``first_record``) count input records from 0 over the whole input;
byte offsets (``start_offset``, ``end_offset``) are positions in the input file.
"""

import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, cast

from . import codec
from .codec import Buffer, type_name
from .constants import KEY_TYPE, KEY_VERSION, MAX_MESSAGE_SIZE, PROTOCOL_VERSION
from .errors import ErrorCode, ProtocolError
from .schema import (
    AbsPath,
    Check,
    Count,
    NonEmptyStr,
    PositiveInt,
    Sha256Hex,
    WireModel,
    fail,
    short_repr,
)

Sender = Literal["worker", "daemon"]

_HEX32 = re.compile(r"[0-9a-f]{32}")
#: A unit's digest (blake2b-128 of its bytes, see virnuc/input_digest.py).
Digest128Hex = Annotated[str, Check(lambda s: bool(_HEX32.fullmatch(s)), "32 lowercase hex digits")]


class WorkerMessageBase(WireModel):
    """Adds the ``type``/``v`` header and the direction to a message dataclass."""

    TYPE: ClassVar[str]
    SENDER: ClassVar[Sender]

    def to_wire(self) -> dict[str, Any]:
        return {KEY_TYPE: self.TYPE, KEY_VERSION: PROTOCOL_VERSION, **super().to_wire()}

    def encode(self) -> bytes:
        """The message as one frame, ready for the DEALER/ROUTER socket."""
        return codec.encode(self.to_wire())


# --- worker -> daemon ----------------------------------------------------------------


@dataclass(frozen=True)
class Hello(WorkerMessageBase):
    """First message of a worker: who it is. ``models`` is set if already loaded."""

    TYPE: ClassVar[Literal["hello"]] = "hello"
    SENDER: ClassVar[Sender] = "worker"
    worker_id: NonEmptyStr
    pid: PositiveInt
    device: NonEmptyStr
    versions: dict[str, str]  # e.g. {"virnuc": "0.1.0", "torch": "2.6.0"}
    models: dict[str, Any] | None = None


@dataclass(frozen=True)
class Heartbeat(WorkerMessageBase):
    """Sent periodically, also while computing; silence means the worker is hung."""

    TYPE: ClassVar[Literal["heartbeat"]] = "heartbeat"
    SENDER: ClassVar[Sender] = "worker"
    worker_id: NonEmptyStr
    seq: Count | None = None


@dataclass(frozen=True)
class Leaving(WorkerMessageBase):
    """The worker exits of its own accord next (a Slurm pilot idle for its
    ``--idle-exit``): an ordinary end, not a death to back off from."""

    TYPE: ClassVar[Literal["leaving"]] = "leaving"
    SENDER: ClassVar[Sender] = "worker"
    worker_id: NonEmptyStr
    reason: NonEmptyStr


@dataclass(frozen=True)
class ModelsLoaded(WorkerMessageBase):
    """The worker finished loading (or switching) models; ``models`` describes them."""

    TYPE: ClassVar[Literal["models_loaded"]] = "models_loaded"
    SENDER: ClassVar[Sender] = "worker"
    worker_id: NonEmptyStr
    models: dict[str, Any]


@dataclass(frozen=True)
class BatchDone(WorkerMessageBase):
    """Progress only, never trusted for resuming: counts since the unit's assign."""

    TYPE: ClassVar[Literal["batch_done"]] = "batch_done"
    SENDER: ClassVar[Sender] = "worker"
    job_id: NonEmptyStr
    unit_id: Count
    records_done: Count
    frames_done: Count


@dataclass(frozen=True)
class Checkpoint(WorkerMessageBase):
    """A part file is durable (fsynced and renamed); the daemon verifies and records it.

    It covers input records ``first_record .. first_record + record_count - 1``;
    ``end_offset`` is the input byte offset just past the last of them, i.e. the
    unit's resume offset once this part is recorded. ``frames`` is its row count, and
    ``frames_reused`` how many of those rows the worker reused from an identical frame
    of the same job rather than computing them (0 from a worker without reuse).
    """

    TYPE: ClassVar[Literal["checkpoint"]] = "checkpoint"
    SENDER: ClassVar[Sender] = "worker"
    job_id: NonEmptyStr
    unit_id: Count
    first_record: Count
    record_count: PositiveInt
    end_offset: Count
    path: AbsPath
    size: Count
    sha256: Sha256Hex
    frames: Count
    frames_reused: Count = 0


@dataclass(frozen=True)
class UnitDone(WorkerMessageBase):
    """Every record of the unit is in a checkpoint already sent; the worker is idle."""

    TYPE: ClassVar[Literal["unit_done"]] = "unit_done"
    SENDER: ClassVar[Sender] = "worker"
    job_id: NonEmptyStr
    unit_id: Count


@dataclass(frozen=True)
class WorkerError(WorkerMessageBase):
    """Something failed. ``fatal``: the worker exits next; else only the unit failed."""

    TYPE: ClassVar[Literal["error"]] = "error"
    SENDER: ClassVar[Sender] = "worker"
    message: str
    fatal: bool
    job_id: NonEmptyStr | None = None
    unit_id: Count | None = None
    no_space: bool = False  # a part could not be written: its disk is full
    bad_input: bool = False  # the unit's input cannot be read as planned (not a bug)


# --- daemon -> worker ----------------------------------------------------------------


@dataclass(frozen=True)
class WireModelSpec(WireModel):
    """Which models a unit needs, as sent in ``assign``; the worker reloads only when
    this changes. It is the wire form of ``virnuc.pipeline.spec.ModelSpec``; the one
    conversion between the two is ``virnuc.model_wire`` (docs/architecture.md §3).

    ``profile`` is ``"demo"`` for the tiny demo models, which the worker builds at
    the named paths when they are missing.
    """

    esm: NonEmptyStr
    dnabert: NonEmptyStr
    classifier: NonEmptyStr
    chunk_length: Literal[300, 500]
    profile: NonEmptyStr | None = None
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"


@dataclass(frozen=True)
class Assign(WorkerMessageBase):
    """Compute ``record_count`` records starting at ``start_record``/``start_offset``.

    On a resumed unit the start is the recorded resume offset, not the unit's
    original start. Parts go to ``parts_dir``, one every ``checkpoint_every`` records;
    the daemon creates that directory, and a worker never creates its parent (a job
    directory that is gone means the job ended).

    ``digest`` (optional, with ``unit_offset``/``unit_end_offset``, the unit's whole
    byte range) is the digest of those bytes at planning: the worker digests the
    range as it reads it (a resumed unit's bytes before ``start_offset`` first) and
    fails the unit with "input changed since submission" instead of finishing it when
    they differ. Absent for units planned by an older virnuc: then nothing is checked.

    ``gzip_index`` (optional, with its ``gzip_index_size`` and ``gzip_index_sha256``)
    is the seek-point index of a gzip input, saved by the planner in the job's
    directory: the worker reads through it only when its size and SHA-256 match, and
    otherwise decompresses from the start (virnuc.pipeline.gzip_index).
    """

    TYPE: ClassVar[Literal["assign"]] = "assign"
    SENDER: ClassVar[Sender] = "daemon"
    job_id: NonEmptyStr
    unit_id: Count
    input: AbsPath
    start_offset: Count
    start_record: Count
    record_count: PositiveInt
    models: WireModelSpec
    save_embeddings: bool
    checkpoint_every: PositiveInt
    parts_dir: AbsPath
    unit_offset: Count | None = None
    unit_end_offset: Count | None = None
    digest: Digest128Hex | None = None
    gzip_index: AbsPath | None = None
    gzip_index_size: Count | None = None
    gzip_index_sha256: Sha256Hex | None = None

    def __post_init__(self) -> None:
        if self.unit_offset is not None and self.unit_offset > self.start_offset:
            fail("unit_offset", f"must be at most start_offset, got {self.unit_offset}")
        if self.unit_end_offset is not None and self.unit_end_offset <= self.start_offset:
            fail("unit_end_offset", f"must be above start_offset, got {self.unit_end_offset}")
        if self.digest is not None and None in (self.unit_offset, self.unit_end_offset):
            fail("digest", "needs unit_offset and unit_end_offset")
        index = (self.gzip_index, self.gzip_index_size, self.gzip_index_sha256)
        if index.count(None) not in (0, len(index)):
            fail("gzip_index", "gzip_index, gzip_index_size and gzip_index_sha256 go together")


@dataclass(frozen=True)
class Cancel(WorkerMessageBase):
    """Abandon ``job_id``'s unit at the next batch boundary. No reply is sent.

    Messages are handled in order, so the daemon may send the next ``assign`` right
    after; anything still arriving for the cancelled job is ignored by the daemon.
    """

    TYPE: ClassVar[Literal["cancel"]] = "cancel"
    SENDER: ClassVar[Sender] = "daemon"
    job_id: NonEmptyStr


@dataclass(frozen=True)
class WorkerShutdown(WorkerMessageBase):
    """Stop at the next batch boundary and exit 0 (SIGKILL follows after a grace)."""

    TYPE: ClassVar[Literal["shutdown"]] = "shutdown"
    SENDER: ClassVar[Sender] = "daemon"


@dataclass(frozen=True)
class DaemonBeat(WorkerMessageBase):
    """virnucd is alive. A worker with no parent to watch (a Slurm pilot) exits when
    it hears nothing from virnucd for its ``--daemon-timeout``."""

    TYPE: ClassVar[Literal["daemon_beat"]] = "daemon_beat"
    SENDER: ClassVar[Sender] = "daemon"


FromWorker = (
    Hello | Heartbeat | Leaving | ModelsLoaded | BatchDone | Checkpoint | UnitDone | WorkerError
)
FromDaemon = Assign | Cancel | WorkerShutdown | DaemonBeat
WorkerMessage = FromWorker | FromDaemon

MESSAGE_TYPES: dict[str, type[WorkerMessage]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Heartbeat,
        Leaving,
        ModelsLoaded,
        BatchDone,
        Checkpoint,
        UnitDone,
        WorkerError,
        Assign,
        Cancel,
        WorkerShutdown,
        DaemonBeat,
    )
}


def parse_worker_message(data: Any, sender: Sender | None = None) -> WorkerMessage:
    """Validate a decoded map and build its message class, chosen by ``type``.

    ``sender`` (if given) rejects messages travelling the wrong way, e.g. an
    ``assign`` arriving at the daemon. Raises ``ProtocolError``: ``bad_request`` for
    an unknown type or bad fields, ``unsupported_version`` for another ``v``.
    """
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"message must be a map, got {type_name(data)}")
    cls = _message_class(data, sender)
    fields = {k: v for k, v in data.items() if k not in (KEY_TYPE, KEY_VERSION)}
    try:
        return cls.from_wire(fields)
    except ProtocolError as e:
        raise ProtocolError(e.code, f"{cls.TYPE} message: {e.message}") from None


def _message_class(data: dict[str, Any], sender: Sender | None) -> type[WorkerMessage]:
    version = data.get(KEY_VERSION)
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"message version {short_repr(version)} is not supported (expected {PROTOCOL_VERSION})",
        )
    kind = data.get(KEY_TYPE)
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None or (sender is not None and sender != cls.SENDER):
        allowed = sorted(t for t, c in MESSAGE_TYPES.items() if sender in (None, c.SENDER))
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"unexpected message type {short_repr(kind)} (expected one of: {', '.join(allowed)})",
        )
    return cls


def decode_from_worker(data: Buffer, max_size: int = MAX_MESSAGE_SIZE) -> FromWorker:
    """Daemon side: decode one frame a worker sent."""
    return cast(FromWorker, parse_worker_message(codec.decode_map(data, max_size), "worker"))


def decode_from_daemon(data: Buffer, max_size: int = MAX_MESSAGE_SIZE) -> FromDaemon:
    """Worker side: decode one frame the daemon sent."""
    return cast(FromDaemon, parse_worker_message(codec.decode_map(data, max_size), "daemon"))
