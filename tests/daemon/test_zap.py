"""Who a caller is: the identity rules (daemon/identify.py), the ZAP handler's replies
(daemon/zap.py), and a real ControlServer that gets the uid from the kernel, whatever
a client claims in its own handshake (a hand-written ZMTP client forging User-Id)."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
import zmq
import zmq.asyncio
from zmq.auth import create_certificates, load_certificate
from zmq.utils import z85

from virnuc.daemon import handlers
from virnuc.daemon.access import CurveServer, Listener
from virnuc.daemon.caller import Caller, CallerSeal
from virnuc.daemon.config import DaemonConfig
from virnuc.daemon.control import ControlServer
from virnuc.daemon.identify import Identify, Refused, parse_peer_address
from virnuc.daemon.zap import ZapHandler
from virnuc.protocol import Op

from tests.support import zmtp
from tests.support.harness import free_port
from tests.support.unix_users import UnixUsers

# --- the peer address ----------------------------------------------------------------------


def test_the_kernel_credentials_are_the_last_three_fields_of_an_ipc_address() -> None:
    peer = parse_peer_address("localhost:1001:1002:4242")
    assert (peer.uid, peer.gid, peer.pid) == (1001, 1002, 4242)


@pytest.mark.parametrize(
    "address",
    [
        "",
        "127.0.0.1",  # tcp: no credentials
        "::1",
        "2001:db8::7:1001:1002:4242",  # IPv6 whose last groups look like numbers
        "localhost:1001:1002",
        "localhost:alice:1002:4242",
        "localhost:-1:1002:4242",
    ],
)
def test_an_address_without_three_integers_after_the_host_is_refused(address: str) -> None:
    with pytest.raises(Refused, match="no kernel credentials"):
        parse_peer_address(address)


# --- Unix users over ipc -------------------------------------------------------------------


def null(identify: Identify, uid: int, gid: int, pid: int = 77) -> Caller:
    return identify.caller("NULL", f"localhost:{uid}:{gid}:{pid}", [])


def test_a_user_over_ipc_owns_as_uid_and_is_no_admin(unix_users: UnixUsers) -> None:
    alice = unix_users.alice
    caller = null(Identify(), alice.uid, alice.gid, pid=4242)
    assert (caller.owner, caller.uid, caller.gid, caller.pid) == (
        f"uid:{alice.uid}",
        alice.uid,
        alice.gid,
        4242,
    )
    assert not caller.admin
    assert caller.label == f"{alice.name} (uid {alice.uid}, pid 4242)"


def test_root_and_virnucds_own_user_are_admins(unix_users: UnixUsers) -> None:
    assert null(Identify(), 0, 0).admin
    daemon = unix_users.daemon
    assert null(Identify(own_uid=daemon.uid), daemon.uid, daemon.gid).admin
    assert not null(Identify(own_uid=daemon.uid), unix_users.alice.uid, unix_users.alice.gid).admin


def test_members_of_admin_group_are_admins_and_others_not(unix_users: UnixUsers) -> None:
    identify = Identify(admin_gid=grp.getgrnam(unix_users.group).gr_gid)  # alice, bob: members
    assert null(identify, unix_users.alice.uid, unix_users.alice.gid).admin
    assert not null(identify, unix_users.eve.uid, unix_users.eve.gid).admin


def test_a_process_gid_alone_does_not_make_an_admin(unix_users: UnixUsers) -> None:
    """Membership counts by the user database, not the gid a process happens to run with."""
    admins = grp.getgrnam(unix_users.group).gr_gid
    assert not null(Identify(admin_gid=admins), unix_users.eve.uid, admins).admin


def test_a_uid_without_a_passwd_entry_is_a_plain_user() -> None:
    caller = null(Identify(admin_gid=0), 424242, 424242)
    assert (caller.owner, caller.admin, caller.label) == ("uid:424242", False, "uid 424242, pid 77")


# --- CURVE keys ----------------------------------------------------------------------------


@dataclass
class KeyDirs:
    root: Path
    allow: Path = field(init=False)
    admins: Path = field(init=False)

    def __post_init__(self) -> None:
        self.allow, self.admins = self.root / "clients", self.root / "admins"
        self.allow.mkdir()
        self.admins.mkdir()

    def add(self, directory: Path, name: str) -> bytes:
        """A new key pair; its public half as NAME.key in `directory`; the raw public key."""
        public_file, _ = create_certificates(self.root, name)
        (directory / f"{name}.key").write_bytes(Path(public_file).read_bytes())
        return z85.decode(load_certificate(public_file)[0])

    def identify(self, **kwargs: Any) -> Identify:
        return Identify(allow_dir=self.allow, admin_dir=self.admins, **kwargs)


def test_an_allowed_key_owns_as_key_name_without_unix_rights(tmp_path: Path) -> None:
    keys = KeyDirs(tmp_path)
    raw = keys.add(keys.allow, "laptop")
    caller = keys.identify().caller("CURVE", "10.0.0.5", [raw])
    assert (caller.owner, caller.uid, caller.gid, caller.admin) == ("key:laptop", None, None, False)
    assert caller.label == "key laptop"


def test_a_key_in_the_admin_dir_is_an_admin(tmp_path: Path) -> None:
    keys = KeyDirs(tmp_path)
    caller = keys.identify().caller("CURVE", "10.0.0.5", [keys.add(keys.admins, "ops")])
    assert (caller.owner, caller.admin) == ("key:ops", True)


def test_a_key_mapped_to_a_user_carries_that_users_identity(
    tmp_path: Path, unix_users: UnixUsers
) -> None:
    keys, alice = KeyDirs(tmp_path), unix_users.alice
    raw = keys.add(keys.allow, "alices-laptop")
    identify = keys.identify(curve_users={"alices-laptop": alice.name})
    caller = identify.caller("CURVE", "10.0.0.5", [raw])
    assert (caller.owner, caller.uid, caller.gid, caller.admin) == (
        f"uid:{alice.uid}",
        alice.uid,
        alice.gid,
        False,
    )
    members = grp.getgrnam(unix_users.group).gr_gid
    as_admin = keys.identify(curve_users={"alices-laptop": alice.name}, admin_gid=members)
    assert as_admin.caller("CURVE", "10.0.0.5", [raw]).admin  # alice is an admin user there


def test_an_unknown_key_and_a_removed_key_are_refused(tmp_path: Path) -> None:
    keys = KeyDirs(tmp_path)
    identify = keys.identify()
    stranger = keys.add(tmp_path, "stranger")  # a key file outside both dirs
    with pytest.raises(Refused, match="in no allowed key dir"):
        identify.caller("CURVE", "10.0.0.5", [stranger])
    revoked = keys.add(keys.allow, "former")
    assert identify.caller("CURVE", "10.0.0.5", [revoked]).owner == "key:former"
    (keys.allow / "former.key").unlink()  # re-read at the next handshake
    with pytest.raises(Refused):
        identify.caller("CURVE", "10.0.0.5", [revoked])


@pytest.mark.parametrize(
    ("mechanism", "credentials"),
    [("PLAIN", [b"root", b"secret"]), ("CURVE", []), ("CURVE", [b"short"]), ("GSSAPI", [])],
)
def test_other_mechanisms_and_missing_credentials_are_refused(
    mechanism: str, credentials: list[bytes]
) -> None:
    with pytest.raises(Refused):
        Identify().caller(mechanism, "localhost:0:0:1", credentials)


# --- the ZAP replies -----------------------------------------------------------------------


def zap_request(address: bytes, mechanism: bytes = b"NULL") -> list[bytes]:
    return [b"1.0", b"7", b"virnuc", address, b"", mechanism]


def test_zap_answers_200_with_the_sealed_caller_or_400() -> None:
    seal = CallerSeal()
    handler = ZapHandler(zmq.asyncio.Context.instance(), Identify(), seal)
    version, request_id, status, _, user_id, _ = handler.reply(zap_request(b"localhost:0:0:9"))
    assert (version, request_id, status) == (b"1.0", b"7", b"200")
    caller = seal.unseal(user_id.decode())
    assert caller is not None
    assert (caller.owner, caller.pid, caller.admin) == ("uid:0", 9, True)
    assert handler.reply(zap_request(b"127.0.0.1"))[2:5] == [b"400", b"not allowed", b""]
    assert handler.reply([b"2.0", b"8"])[:3] == [b"1.0", b"8", b"500"]


def test_a_user_id_not_sealed_by_this_process_is_worth_nothing() -> None:
    ours, theirs = CallerSeal(), CallerSeal()
    admin = Caller("uid:0", 0, 0, True, "root (uid 0)")
    forged = theirs.seal(admin)
    assert ours.unseal(forged) is None
    body, mac = ours.seal(admin).rsplit("|", 1)
    assert ours.unseal(body.replace('"admin":true', '"admin":false') + "|" + mac) is None
    assert ours.unseal("root") is None
    assert ours.unseal(None) is None


# --- a real control server -----------------------------------------------------------------


@dataclass
class Served:
    path: Path  # the control socket
    seal: CallerSeal
    callers: list[Caller]  # who pinged, as the handler saw them
    stops: list[str]  # shutdowns requested
    endpoint: str = ""

    def __post_init__(self) -> None:
        self.endpoint = self.endpoint or f"ipc://{self.path}"


async def serve(
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    gid: int | None,
    with_zap: bool = True,
    identify: Identify | None = None,
    curve: CurveServer | None = None,
) -> AsyncIterator[Served]:
    """A ControlServer and ZAP handler on this loop; over tcp with CURVE when `curve`."""
    endpoint = f"tcp://127.0.0.1:{free_port()}" if curve is not None else ""
    served = Served(directory / "control.sock", CallerSeal(), [], [], endpoint)

    async def record(ctx: Any, args: Any, caller: Caller) -> dict[str, Any]:
        served.callers.append(caller)
        return {}

    monkeypatch.setitem(handlers.HANDLERS, Op.PING, record)
    context = zmq.asyncio.Context()
    zap = ZapHandler(context, identify or Identify(), served.seal)
    if with_zap:
        zap.start()
    scheduler = SimpleNamespace(accepting=True, workers={})
    ctx = handlers.DaemonContext(DaemonConfig(), None, scheduler, served.stops.append)  # type: ignore[arg-type]
    listener = Listener(gid, curve)
    control = ControlServer(context, served.endpoint, ctx, listener, seal=served.seal)
    control.start()
    try:
        yield served
    finally:
        await control.stop()
        await zap.stop()
        context.destroy(linger=0)


@pytest_asyncio.fixture
async def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    async for value in serve(tmp_path, monkeypatch, gid=None):
        yield value


@pytest_asyncio.fixture
async def shared(unix_users: UnixUsers, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    """A control socket the members' group (alice, bob) may connect to."""
    directory = unix_users.base / f"control-{secrets.token_hex(4)}"
    directory.mkdir(mode=0o711)
    async for value in serve(directory, monkeypatch, gid=grp.getgrnam(unix_users.group).gr_gid):
        yield value


def request(op: str) -> dict[str, Any]:
    return {"v": 1, "id": secrets.token_hex(4), "op": op, "args": {}}


def pyzmq_client(endpoint: str, op: str) -> str:
    """Python source: one REQ request with pyzmq; prints {pid, reply} as JSON."""
    return (
        "import json, os, msgpack, zmq\n"
        "s = zmq.Context().socket(zmq.REQ)\n"
        "s.setsockopt(zmq.LINGER, 0)\n"
        f"s.connect({endpoint!r})\n"
        f"s.send(msgpack.packb({request(op)!r}))\n"
        "assert s.poll(10000), 'no reply'\n"
        "print(json.dumps({'pid': os.getpid(), 'reply': msgpack.unpackb(s.recv())}))\n"
    )


def raw_client(path: Path, user_id: str, op: str) -> str:
    """Python source: tests/support/zmtp.py, then one request with a forged User-Id."""
    source = Path(zmtp.__file__).read_text()  # begins with its __future__ import
    return source + (
        "\nimport json, os\n"
        f"client = RawDealer({str(path)!r}, {{'User-Id': {user_id.encode()!r}}})\n"
        f"print(json.dumps({{'pid': os.getpid(), 'reply': client.request({request(op)!r})}}))\n"
    )


async def run_as(users: UnixUsers, user: Any, code: str) -> dict[str, Any]:
    done = await asyncio.to_thread(users.python_as, user, code, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.asyncio
async def test_another_users_uid_and_pid_come_from_the_kernel(
    shared: Served, unix_users: UnixUsers
) -> None:
    alice = unix_users.alice
    answer = await run_as(unix_users, alice, pyzmq_client(shared.endpoint, "ping"))
    assert answer["reply"]["ok"], answer
    (caller,) = shared.callers
    assert (caller.uid, caller.gid, caller.pid) == (alice.uid, alice.gid, answer["pid"])
    assert (caller.owner, caller.admin) == (f"uid:{alice.uid}", False)


@pytest.mark.asyncio
async def test_a_user_forging_a_sealed_admin_user_id_is_still_themselves(
    shared: Served, unix_users: UnixUsers
) -> None:
    """Even a User-Id that our seal would accept (leaked, say) loses to ZAP's: alice,
    claiming to be root in her handshake, may not stop virnucd."""
    root = shared.seal.seal(Caller("uid:0", 0, 0, True, "root (uid 0)"))
    answer = await run_as(unix_users, unix_users.alice, raw_client(shared.path, root, "shutdown"))
    assert answer["reply"]["error"]["code"] == "forbidden", answer
    assert answer["reply"]["error"]["message"].startswith("only an admin may stop virnucd")
    assert shared.stops == []


@pytest.mark.asyncio
async def test_a_raw_zmtp_client_gets_its_kernel_identity_not_the_one_it_claims(
    served: Served,
) -> None:
    claim = served.seal.seal(Caller("uid:4242", 4242, 4242, False, "someone (uid 4242)"))
    # In a thread: the handshake waits for the ZAP handler, which runs on this loop.
    client = await asyncio.to_thread(zmtp.RawDealer, str(served.path), {"User-Id": claim.encode()})
    try:
        reply = await asyncio.to_thread(client.request, request("ping"))
    finally:
        client.close()
    assert reply["ok"], reply
    (caller,) = served.callers
    assert (caller.owner, caller.uid, caller.pid) == (
        f"uid:{os.getuid()}",
        os.getuid(),
        os.getpid(),
    )


@pytest.mark.asyncio
async def test_without_our_zap_handler_a_forged_user_id_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ZAP handler (a bug): libzmq then passes the client's own User-Id through, and
    the seal is what refuses it, as it refuses a connection with no User-Id at all."""
    async for served in serve(tmp_path, monkeypatch, gid=None, with_zap=False):
        client = await asyncio.to_thread(zmtp.RawDealer, str(served.path), {"User-Id": b"root"})
        try:
            forged = await asyncio.to_thread(client.request, request("shutdown"))
        finally:
            client.close()
        plain = await asyncio.to_thread(pyzmq_request, served.endpoint, "ping")
    for reply in (forged, plain):
        assert reply["error"] == {"code": "forbidden", "message": "unauthenticated connection"}
    assert served.stops == []
    assert served.callers == []


def pyzmq_request(
    endpoint: str, op: str, options: dict[int, bytes] | None = None
) -> dict[str, Any]:
    import msgpack

    context = zmq.Context()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    for option, value in (options or {}).items():
        socket.setsockopt(option, value)
    try:
        socket.connect(endpoint)
        socket.send(msgpack.packb(request(op)))
        assert socket.poll(10_000), "no reply"
        return msgpack.unpackb(socket.recv())  # type: ignore[no-any-return]
    finally:
        context.destroy(linger=0)


@pytest.mark.asyncio
async def test_a_curve_key_mapped_to_a_user_reaches_the_handlers_as_that_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unix_users: UnixUsers
) -> None:
    keys, alice = KeyDirs(tmp_path), unix_users.alice
    keys.add(keys.allow, "alices")
    public, secret = load_certificate(tmp_path / "alices.key_secret")
    server_public, server_secret = zmq.curve_keypair()
    curve = CurveServer(server_public, server_secret, keys.allow)
    identify = keys.identify(curve_users={"alices": alice.name})
    assert secret is not None
    options = {zmq.CURVE_SERVERKEY: server_public, zmq.CURVE_PUBLICKEY: public}
    options[zmq.CURVE_SECRETKEY] = secret
    async for served in serve(tmp_path, monkeypatch, None, identify=identify, curve=curve):
        reply = await asyncio.to_thread(pyzmq_request, served.endpoint, "ping", options)
        assert reply["ok"], reply
    (caller,) = served.callers
    assert (caller.owner, caller.uid, caller.gid, caller.label) == (
        f"uid:{alice.uid}",
        alice.uid,
        alice.gid,
        f"key alices as {alice.name} (uid {alice.uid})",
    )
