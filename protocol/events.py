"""Events the daemon publishes on its events socket (an XPUB; clients connect a SUB).

Each event is two frames: a UTF-8 topic, which SUB sockets filter on by prefix, and
a msgpack map body with ``type`` and ``v``. Topics:

- ``job.<job_id>.progress`` / ``job.<job_id>.state``: body = JobStatus fields
- ``worker.<worker_id>.state``: body = WorkerInfo fields + ``models_loaded``
- ``daemon.state``: body ``{state: "running"|"stopping"}``

Subscribe to ``job.<job_id>.`` (with the trailing dot) for one job; ids never
contain a dot, so the prefix cannot match another job.

The daemon applies a subscription only when the subscriber may see what it matches
(daemon/subscriptions.py): anyone may follow ``daemon.state`` and the jobs they may
see (their own: ``job.<job_id>.`` or a longer prefix of its topics); ``worker.``
topics and prefixes spanning several jobs (``""``, ``job.``, ``job.a1`` without the
dot) are for admins only. A refused subscription is not answered: the subscriber
just receives nothing, as for a job that does not exist. Events are hints either
way: follow a job by subscribing, then polling ``status``.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum, unique
from typing import Any, Literal, cast

from . import codec
from .codec import Buffer
from .constants import KEY_TYPE, KEY_VERSION, MAX_MESSAGE_SIZE, PROTOCOL_VERSION
from .errors import DecodeError, ErrorCode, ProtocolError
from .schema import check_fields, short_repr
from .status import JobStatus, WorkerInfo


@unique
class EventType(StrEnum):
    """The ``type`` of an event body; also the topic's shape."""

    JOB_PROGRESS = "job.progress"  # counters moved (records_done, frames_done, ...)
    JOB_STATE = "job.state"  # JobState changed
    WORKER_STATE = "worker.state"  # WorkerState, pid, current unit or models changed
    DAEMON_STATE = "daemon.state"  # daemon started serving or began shutting down


DaemonState = Literal["running", "stopping"]
JobEventKind = Literal["progress", "state"]


@dataclass(frozen=True)
class Event:
    """One received event: its topic, its type, and the whole body map."""

    topic: str
    type: EventType
    body: dict[str, Any]


def _check_id(kind: str, ident: str) -> str:
    """Ids end up inside dotted topics, so they must be non-empty and dot-free."""
    if not ident or "." in ident:
        raise ValueError(f"{kind} id {ident!r} cannot be used in an event topic")
    return ident


def job_topic(job_id: str, kind: JobEventKind | None = None) -> str:
    """``job.<id>.<kind>``, or the ``job.<id>.`` prefix to subscribe to every kind."""
    return f"job.{_check_id('job', job_id)}.{kind or ''}"


def worker_topic(worker_id: str | None = None) -> str:
    """``worker.<id>.state``, or the ``worker.`` prefix for every worker."""
    if worker_id is None:
        return "worker."
    return f"worker.{_check_id('worker', worker_id)}.state"


DAEMON_TOPIC = "daemon.state"


def encode_event(topic: str, body: Mapping[str, object]) -> list[bytes]:
    """The two frames of an event; ``body`` must hold ``type``, ``v`` is added."""
    if not isinstance(body.get(KEY_TYPE), str):
        raise ValueError("an event body needs a str 'type'")
    payload = {**body, KEY_VERSION: PROTOCOL_VERSION}
    return [topic.encode(), codec.encode(payload)]


def job_event(kind: JobEventKind, status: JobStatus) -> list[bytes]:
    """A ``job.<id>.<kind>`` event; the body is the job's current status."""
    event_type = EventType.JOB_STATE if kind == "state" else EventType.JOB_PROGRESS
    return encode_event(job_topic(status["job_id"], kind), {KEY_TYPE: event_type, **status})


def worker_event(info: WorkerInfo, *, models_loaded: bool) -> list[bytes]:
    """A worker event; the body is the worker's ``workers`` entry plus models_loaded."""
    body = {KEY_TYPE: EventType.WORKER_STATE, **info, "models_loaded": models_loaded}
    return encode_event(worker_topic(info["id"]), body)


def daemon_event(state: DaemonState) -> list[bytes]:
    """Published when the daemon starts serving and when it begins to stop."""
    return encode_event(DAEMON_TOPIC, {KEY_TYPE: EventType.DAEMON_STATE, "state": state})


def decode_event(frames: Sequence[Buffer], max_size: int = MAX_MESSAGE_SIZE) -> Event:
    """Decode a received event; ``DecodeError``/``ProtocolError`` if malformed.

    Subscribers should drop (and may log) events that fail here, or whose version
    they do not speak (``unsupported_version``), rather than stop listening.
    """
    if len(frames) != 2:
        raise DecodeError(f"an event has 2 frames, got {len(frames)}")
    try:
        topic = bytes(frames[0]).decode()
    except UnicodeDecodeError as e:
        raise DecodeError("event topic is not UTF-8") from e
    body = codec.decode_map(frames[1], max_size)
    return Event(topic, _check_body(body), body)


def _check_body(body: dict[str, Any]) -> EventType:
    version = body.get(KEY_VERSION)
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION, f"event version {short_repr(version)} is not supported"
        )
    kind = body.get(KEY_TYPE)
    try:
        return EventType(str(kind))
    except ValueError:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"unknown event type {short_repr(kind)}"
        ) from None


def event_job_status(event: Event) -> JobStatus:
    """The JobStatus carried by a ``job.*`` event (validated; extra fields kept)."""
    return cast(JobStatus, _fields(event, JobStatus, (EventType.JOB_PROGRESS, EventType.JOB_STATE)))


def event_worker_info(event: Event) -> WorkerInfo:
    """The WorkerInfo carried by a ``worker.*`` event (``models_loaded`` is kept too)."""
    return cast(WorkerInfo, _fields(event, WorkerInfo, (EventType.WORKER_STATE,)))


def _fields(event: Event, shape: type, types: tuple[EventType, ...]) -> dict[str, Any]:
    if event.type not in types:
        raise ValueError(f"a {event.type} event does not carry a {shape.__name__}")
    body = {k: v for k, v in event.body.items() if k not in (KEY_TYPE, KEY_VERSION)}
    return check_fields(shape, body, "event", "keep")
