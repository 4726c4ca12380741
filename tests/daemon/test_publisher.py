"""The events socket sends each subscriber only what its caller may see.

A real XPUB publisher on an ipc socket, real SUB (and XSUB) subscribers, and a stand-in
for virnucd's ZAP handler: it answers each connection with the sealed Caller chosen
for the PLAIN user name the subscriber connects with, as daemon/zap.py does from the
kernel's credentials. Negative checks wait `QUIET_MS` after a subscriber that may see
the event received it: every event goes out to every matching pipe at once.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import zmq
import zmq.asyncio

from virnuc.daemon.access import Listener
from virnuc.daemon.caller import Caller, CallerSeal
from virnuc.daemon.publisher import EventPublisher
from virnuc.daemon.subscriptions import OwnerLookup
from virnuc.protocol.events import (
    DAEMON_TOPIC,
    JobEventKind,
    daemon_event,
    encode_event,
    job_topic,
)

from tests.support.poll import IN_PROCESS_DEADLINE, until

pytestmark = pytest.mark.asyncio

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
QUIET_MS = 300

ALICE = Caller("uid:1001", 1001, 1001, admin=False, label="alice (uid 1001)")
BOB = Caller("uid:1002", 1002, 1002, admin=False, label="bob (uid 1002)")
ROOT = Caller("uid:0", 0, 0, admin=True, label="root (uid 0)")
OWNERS = {"a1": ALICE.owner, "b1": BOB.owner, "old": None}


@dataclass(frozen=True)
class PlainListener(Listener):
    """Binds as the real Listener does, with PLAIN and a ZAP domain: the stand-in ZAP
    handler then learns which test subscriber connects (libzmq asks ZAP about a NULL
    connection only when the socket has a ZAP domain; virnucd's Listener sets one)."""

    def bind(self, socket: zmq.Socket[Any], endpoint: str) -> None:
        socket.plain_server = True
        socket.zap_domain = b"virnuc"
        super().bind(socket, endpoint)


class StandInZap:
    """Answers every ZAP request 200, User-Id = what `user_ids` maps the user name to."""

    def __init__(self, context: zmq.asyncio.Context, user_ids: dict[str, str]):
        self.user_ids = user_ids
        self.socket = context.socket(zmq.REP)
        self.socket.bind(ZAP_ENDPOINT)
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            (
                _version,
                request_id,
                _domain,
                _address,
                _identity,
                _mechanism,
                *credentials,
            ) = await self.socket.recv_multipart()
            user_id = self.user_ids.get(credentials[0].decode(), "") if credentials else ""
            reply = [b"1.0", request_id, b"200", b"OK", user_id.encode(), b""]
            await self.socket.send_multipart(reply)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.socket.close(linger=0)


@dataclass
class Events:
    """A running publisher, its stand-in ZAP handler, and the subscribers a test made."""

    context: zmq.asyncio.Context
    zap: StandInZap
    publisher: EventPublisher
    directory: Path
    sockets: list[zmq.asyncio.Socket] = field(default_factory=list)

    @classmethod
    async def start(cls, owner_of: OwnerLookup, user_ids: dict[str, str] | None = None) -> Events:
        """alice, bob and root connect as those Callers; `user_ids` adds or overrides."""
        seal = CallerSeal()
        context = zmq.asyncio.Context()
        users = {"alice": seal.seal(ALICE), "bob": seal.seal(BOB), "root": seal.seal(ROOT)}
        zap = StandInZap(context, {**users, **(user_ids or {})})
        directory = Path(tempfile.mkdtemp(prefix="ev", dir="/tmp"))  # ipc paths are short
        endpoint = f"ipc://{directory}/events.sock"
        listener = PlainListener()
        publisher = EventPublisher(context, endpoint, listener, seal=seal, owner_of=owner_of)
        publisher.start()
        await publisher.started()
        return cls(context, zap, publisher, directory)

    async def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)
        await self.publisher.stop()
        await self.zap.close()
        self.context.term()
        shutil.rmtree(self.directory)

    def subscriber(self, user: str, *topics: str, kind: int = zmq.SUB) -> zmq.asyncio.Socket:
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)  # an XSUB drops what it cannot queue: queue all
        sock.plain_username = user.encode()
        sock.plain_password = b"unused"
        for topic in topics:
            sock.subscribe(topic)
        sock.connect(self.publisher.endpoint)
        self.sockets.append(sock)
        return sock

    async def settled(self, count: int) -> None:
        """Wait until `count` messages from subscribers were applied, refused or ignored."""
        await until(lambda: self.publisher.handled >= count, f"{count} subscriptions handled")

    async def publish_until_received(self, frames: list[bytes], sock: zmq.asyncio.Socket) -> None:
        """Publish `frames` again and again until `sock` receives them."""

        async def received() -> bool:
            self.publisher.publish(frames)
            return bool(await sock.poll(20)) and (await sock.recv_multipart()) == frames

        await until(received, f"{frames[0]!r} received")


async def owners(job_id: str) -> str | None:
    return OWNERS.get(job_id)


@pytest_asyncio.fixture
async def events() -> AsyncIterator[Events]:
    harness = await Events.start(owners)
    try:
        yield harness
    finally:
        await harness.close()


def job(job_id: str, kind: JobEventKind = "progress", n: int = 0) -> list[bytes]:
    body = {"type": f"job.{kind}", "job_id": job_id, "n": n}
    return encode_event(job_topic(job_id, kind), body)


def worker(worker_id: str) -> list[bytes]:
    return encode_event(f"worker.{worker_id}.state", {"type": "worker.state", "id": worker_id})


async def received_topics(sock: zmq.asyncio.Socket, quiet_ms: int = QUIET_MS) -> list[bytes]:
    """Every topic `sock` receives until it has been quiet for `quiet_ms`."""
    topics = []
    while await sock.poll(quiet_ms):
        topics.append((await sock.recv_multipart())[0])
    return topics


async def next_event(sock: zmq.asyncio.Socket) -> list[bytes]:
    return await asyncio.wait_for(sock.recv_multipart(), IN_PROCESS_DEADLINE)


async def test_the_owner_receives_its_jobs_events_and_another_member_none_of_them(
    events: Events,
) -> None:
    alice = events.subscriber("alice", job_topic("a1"))
    everything = ["", "j", "job.", "job.a", job_topic("a1"), job_topic("a1", "state"), "worker."]
    bob = events.subscriber("bob", *everything)
    await events.settled(1 + len(everything))
    sent = [job("a1", n=n) for n in range(3)] + [job("a1", "state", n=3)]
    for frames in sent:
        events.publisher.publish(frames)
    assert [await next_event(alice) for _ in sent] == sent
    assert await received_topics(bob) == []


async def test_a_job_without_an_owner_or_of_another_member_is_not_followed(
    events: Events,
) -> None:
    bob = events.subscriber("bob", job_topic("old"), job_topic("a1"), job_topic("none"))
    root = events.subscriber("root", job_topic("old"))
    await events.settled(4)
    for job_id in ("old", "a1", "none"):
        events.publisher.publish(job(job_id))
    assert await next_event(root) == job("old")
    assert await received_topics(bob) == []


async def test_an_admin_receives_every_topic(events: Events) -> None:
    root = events.subscriber("root", "")
    await events.settled(1)
    sent = [job("a1"), job("b1"), job("old"), worker("w0"), daemon_event("running")]
    for frames in sent:
        events.publisher.publish(frames)
    assert [await next_event(root) for _ in sent] == sent


async def test_daemon_state_reaches_every_caller_and_only_it(events: Events) -> None:
    alice = events.subscriber("alice", DAEMON_TOPIC)
    bob = events.subscriber("bob", DAEMON_TOPIC, "daemon.", "worker.")
    await events.settled(4)
    events.publisher.publish(worker("w0"))
    events.publisher.publish(daemon_event("running"))
    assert await next_event(alice) == daemon_event("running")
    assert await next_event(bob) == daemon_event("running")
    assert await received_topics(bob) == []


async def test_a_subscriber_without_a_valid_seal_receives_nothing() -> None:
    forged = {
        "mallory": '{"owner":"uid:0","admin":true}|' + "0" * 64,  # a made-up seal
        "other-key": CallerSeal().seal(ROOT),  # sealed, but not with this daemon's key
        "anonymous": "",  # no User-Id at all (no ZAP handler on the socket)
    }
    events = await Events.start(owners, forged)
    try:
        root = events.subscriber("root", "")
        strangers = [events.subscriber(name, "", DAEMON_TOPIC, job_topic("a1")) for name in forged]
        await events.settled(1 + 3 * len(strangers))
        events.publisher.publish(job("a1"))
        events.publisher.publish(daemon_event("running"))
        assert await next_event(root) == job("a1")
        assert await next_event(root) == daemon_event("running")
        for stranger in strangers:
            assert await received_topics(stranger) == []
    finally:
        await events.close()


async def test_an_unsubscribed_job_is_no_longer_received(events: Events) -> None:
    root = events.subscriber("root", "")
    alice = events.subscriber("alice", job_topic("a1"))
    await events.settled(2)
    events.publisher.publish(job("a1", n=1))
    assert await next_event(alice) == job("a1", n=1)
    alice.unsubscribe(job_topic("a1"))
    await events.settled(3)
    events.publisher.publish(job("a1", n=2))
    assert await next_event(root) == job("a1", n=1)
    assert await next_event(root) == job("a1", n=2)
    assert await received_topics(alice) == []


async def test_events_keep_flowing_while_an_owner_is_looked_up() -> None:
    asked, answer = asyncio.Event(), asyncio.Event()

    async def slow_owners(job_id: str) -> str | None:
        asked.set()
        await answer.wait()
        return OWNERS.get(job_id)

    events = await Events.start(slow_owners)
    try:
        root = events.subscriber("root", "")
        await events.settled(1)
        alice = events.subscriber("alice", job_topic("a1"))
        await asyncio.wait_for(asked.wait(), IN_PROCESS_DEADLINE)
        events.publisher.publish(job("a1", n=1))
        assert await next_event(root) == job("a1", n=1)  # sent while the lookup waits
        answer.set()
        await events.settled(2)
        events.publisher.publish(job("a1", n=2))
        assert await next_event(alice) == job("a1", n=2)
    finally:
        await events.close()


async def test_a_message_that_is_no_subscription_cannot_steer_one_to_another_pipe(
    events: Events,
) -> None:
    """libzmq pairs each subscription it hands up with its pipe through a queue that
    other messages do not fill: an XSUB that sends one, then subscribes to alice's job
    just after alice does, would get alice's subscription applied to its own pipe (this
    flood did nearly every time before the publisher knew). It never may."""
    root = events.subscriber("root", "")
    alices = [events.subscriber("alice") for _ in range(4)]  # each subscribes mid-flood
    hostile = events.subscriber("bob", kind=zmq.XSUB)
    await events.settled(1)
    rounds = 400
    for n in range(rounds):
        await hostile.send(b"not a subscription")
        await hostile.send(b"\x01" + job_topic("a1").encode())
        if n % 100 == 50:
            alices[n // 100].subscribe(job_topic("a1"))
        if n % 10 == 0:  # sending makes the XPUB take in what arrived meanwhile
            events.publisher.publish(daemon_event("running"))
            await asyncio.sleep(0)
    await events.settled(1 + 2 * rounds + len(alices))
    final = job("a1", "state")
    events.publisher.publish(final)
    while await next_event(root) != final:
        pass
    assert await received_topics(hostile) == []


async def test_an_event_is_dropped_when_the_inbox_is_full() -> None:
    context = zmq.asyncio.Context()
    try:
        publisher = EventPublisher(context, "ipc:///nonexistent/events.sock", seal=CallerSeal())
        for _ in range(publisher.inbox.maxsize + 1):
            publisher.publish(daemon_event("running"))
        assert publisher.dropped == 1
    finally:
        context.term()
