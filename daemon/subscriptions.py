"""Who may follow which events: the check every subscription to virnucd's events passes.

The events socket is an XPUB in manual mode: a subscription reaches virnucd as a message,
and a subscriber receives a topic only once virnucd has applied the subscription for it.
This module decides that, from the subscription's topic prefix and the `Caller` our ZAP
handler sealed into the connection's User-Id:

- admins may subscribe to anything, the empty prefix included;
- everyone may follow ``daemon.state``;
- others may follow a job (``job.<id>.`` or a longer prefix of its topics) when they
  may see it (`Caller.may_see` its owner), and nothing else: not ``worker.``, not a
  prefix such as ``""``, ``job.`` or ``job.1`` that spans other jobs;
- a subscription with no valid seal (no ZAP handler, a forged User-Id) is refused.

A refused subscription is just not applied: the subscriber receives nothing, exactly
as for a job that does not exist, so it cannot learn which jobs exist.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
import zmq

from virnuc.protocol.events import DAEMON_TOPIC

from .caller import Caller, CallerSeal

if TYPE_CHECKING:
    from .progress.log import ProgressLog

log = structlog.get_logger()

#: The owner (`Caller.owner`) of a job, or None if there is no such job or it recorded
#: none (an older job: admins only).
OwnerLookup = Callable[[str], Awaitable[str | None]]


def owners_in(progress: ProgressLog) -> OwnerLookup:
    """The `OwnerLookup` of the jobs recorded in `progress`."""

    async def owner_of(job_id: str) -> str | None:
        row = await progress.get_job(job_id)
        return row.owner if row is not None else None

    return owner_of


#: Longer topics are refused (and libzmq disconnects a peer sending a longer message):
#: real topics are a few dozen bytes, and each subscription is held in memory.
MAX_TOPIC = 256

_JOB_PREFIX = b"job."
_DAEMON_PREFIX = DAEMON_TOPIC.encode()


@dataclass(frozen=True)
class SubscriptionRequest:
    """One (un)subscription message read from the XPUB socket."""

    subscribe: bool  # False: an unsubscription
    topic: bytes
    caller: Caller | None  # None: no valid seal

    @property
    def who(self) -> str:
        return self.caller.label if self.caller is not None else "an unauthenticated subscriber"


def read_request(frame: zmq.Frame, seal: CallerSeal | None) -> SubscriptionRequest | None:
    """The (un)subscription a message from the XPUB socket carries, or None for any other
    message (an XSUB peer may send some; libzmq hands them up too)."""
    data = frame.bytes
    if not data or data[0] not in (0, 1):
        return None
    caller = None
    if seal is not None:
        try:
            caller = seal.unseal(str(frame.get("User-Id")))
        except zmq.ZMQError:  # no metadata (a closed pipe's unsubscriptions) or no User-Id
            caller = None
    return SubscriptionRequest(data[0] == 1, data[1:], caller)


def job_of(topic: bytes) -> str | None:
    """The job whose topics all start with `topic` (``job.<id>.`` or longer), or None."""
    if not topic.startswith(_JOB_PREFIX):
        return None
    job_id, dot, _ = topic[len(_JOB_PREFIX) :].partition(b".")
    if not job_id or not dot:
        return None
    try:
        return job_id.decode()
    except UnicodeDecodeError:
        return None


class SubscriptionGate:
    """Decides whether a subscriber may receive a topic prefix.

    A subscription whose User-Id the seal does not vouch for (no ZAP handler in front
    of the socket, a forged one) is refused. Without `owner_of` only admins may follow
    jobs.
    Job owners never change, so those looked up are remembered (up to `cache_size`).
    """

    def __init__(
        self,
        seal: CallerSeal,
        owner_of: OwnerLookup | None = None,
        cache_size: int = 4096,
    ):
        self.seal = seal
        self.owner_of = owner_of
        self.cache_size = cache_size
        self._owners: OrderedDict[str, str] = OrderedDict()

    def check(self, request: SubscriptionRequest) -> bool | str:
        """True or False when the request alone decides; otherwise the id of the job
        whose owner decides (pass it to `may_follow_job`)."""
        caller = request.caller
        if not request.subscribe:
            return True  # unsubscribing only ever narrows what a pipe receives
        if caller is None or len(request.topic) > MAX_TOPIC:
            return False
        if caller.admin:
            return True
        if request.topic.startswith(_DAEMON_PREFIX):
            return True
        job_id = job_of(request.topic)
        if job_id is None or self.owner_of is None:
            return False
        owner = self._owners.get(job_id)
        if owner is not None:
            return caller.may_see(owner)
        return job_id

    async def may_follow_job(self, caller: Caller | None, job_id: str) -> bool:
        """Whether `caller` may see job `job_id`, its owner looked up (never raises)."""
        if caller is None or self.owner_of is None:
            return False
        try:
            owner = await self.owner_of(job_id)
        except Exception as exc:  # the database is closing or broken: refuse, say why
            log.warning("events.owner_lookup_failed", job_id=job_id, error=repr(exc))
            return False
        if owner is not None:
            self._remember(job_id, owner)
        return caller.may_see(owner)

    def _remember(self, job_id: str, owner: str) -> None:
        self._owners[job_id] = owner
        if len(self._owners) > self.cache_size:
            self._owners.popitem(last=False)
