"""Following one job until it ends: events for liveness, ``status`` polls for truth.

PUB/SUB drops messages (a subscription takes a moment to reach the daemon, and a
slow subscriber loses events under load), so events alone could miss the job's end
and wait forever. docs/protocol.md's recipe: subscribe first, then ask ``status``,
then apply events, and poll ``status`` every few seconds anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from virnuc.protocol import (
    Event,
    EventType,
    JobState,
    ProtocolError,
    StatusArgs,
    event_job_status,
    job_topic,
)

from .connection import DaemonClient, Subscription

#: Seconds between ``status`` polls while following a job (events come in between).
POLL_INTERVAL = 2.0

StatusCallback = Callable[[dict[str, Any]], None]


def is_terminal(status: dict[str, Any]) -> bool:
    """True for done, failed and killed; an unknown (newer) state is not terminal."""
    try:
        return JobState(status["state"]).is_terminal
    except ValueError:
        return False


def follow_job(client: DaemonClient, job_id: str, on_status: StatusCallback) -> dict[str, Any]:
    """Call ``on_status`` with each new status of ``job_id``; return its terminal one."""
    with client.subscribe(job_topic(job_id)) as events:
        status = client.call(StatusArgs(job_id))
        on_status(status)
        while not is_terminal(status):
            status = _events_until_poll(events, job_id, on_status) or client.call(
                StatusArgs(job_id)
            )
            on_status(status)
        return status


def _events_until_poll(
    events: Subscription, job_id: str, on_status: StatusCallback
) -> dict[str, Any] | None:
    """Apply events for up to POLL_INTERVAL seconds; the terminal status if one came."""
    deadline = time.monotonic() + POLL_INTERVAL
    while (remaining := deadline - time.monotonic()) > 0:
        event = events.receive(remaining)
        if event is None:
            return None
        status = _job_status(event, job_id)
        if status is None:
            continue
        if is_terminal(status):
            return status
        on_status(status)
    return None


def _job_status(event: Event, job_id: str) -> dict[str, Any] | None:
    """The JobStatus in a job event about ``job_id``, else None (ignored)."""
    if event.type not in (EventType.JOB_PROGRESS, EventType.JOB_STATE):
        return None
    try:
        status = dict(event_job_status(event))
    except (ProtocolError, ValueError):
        return None
    return status if status.get("job_id") == job_id else None
