"""Following one job until it ends: events for liveness, ``status`` polls for truth.

PUB/SUB drops messages (a subscription takes a moment to reach the daemon, and a
slow subscriber loses events under load), so events alone could miss the job's end
and wait forever. docs/protocol.md's recipe: subscribe first, then ask ``status``,
then apply events, and poll ``status`` every few seconds anyway.

A poll that gets no answer within the client's timeout is asked again (a paused or
busy virnucd answers later), until virnucd has been silent for ``give_up_after``
seconds; a missing or stale socket (virnucd is gone) still ends the follow at once.
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
from .errors import NoAnswer

#: Seconds between ``status`` polls while following a job (events come in between).
POLL_INTERVAL = 2.0
#: Seconds virnucd may go without answering a poll before following gives up (exit 3).
GIVE_UP_AFTER = 120.0

StatusCallback = Callable[[dict[str, Any]], None]
NoticeCallback = Callable[[str], None]


def is_terminal(status: dict[str, Any]) -> bool:
    """True for done, failed and killed; an unknown (newer) state is not terminal."""
    try:
        return JobState(status["state"]).is_terminal
    except ValueError:
        return False


def follow_job(
    client: DaemonClient,
    job_id: str,
    on_status: StatusCallback,
    *,
    give_up_after: float = GIVE_UP_AFTER,
    on_notice: NoticeCallback | None = None,
) -> dict[str, Any]:
    """Call ``on_status`` with each new status of ``job_id``; return its terminal one.

    ``on_notice`` hears (once per silence) that virnucd did not answer and is asked again.
    """

    def poll() -> dict[str, Any]:
        return poll_status(client, job_id, give_up_after, on_notice)

    with client.subscribe(job_topic(job_id)) as events:
        status = poll()
        on_status(status)
        while not is_terminal(status):
            status = _events_until_poll(events, job_id, on_status) or poll()
            on_status(status)
        return status


def poll_status(
    client: DaemonClient,
    job_id: str,
    give_up_after: float,
    on_notice: NoticeCallback | None = None,
) -> dict[str, Any]:
    """``status``, asked again while unanswered, each try waiting the client's timeout;
    raises ``NoAnswer`` once virnucd has been silent for ``give_up_after`` seconds."""
    deadline = time.monotonic() + give_up_after
    tries = 0
    while True:
        timeout = min(client.timeout, max(deadline - time.monotonic(), 0.001))
        try:
            return client.call(StatusArgs(job_id), timeout=timeout)
        except NoAnswer as exc:
            tries += 1
            if time.monotonic() >= deadline:
                raise NoAnswer(
                    exc.endpoint,
                    f"no answer from virnucd at {exc.endpoint} for {give_up_after:g} s "
                    f"({tries} tries, each waiting up to {client.timeout:g} s)",
                ) from exc
            if tries == 1 and on_notice is not None:
                on_notice(f"{exc.message}; asking again for up to {give_up_after:g} s")


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
