"""Who may talk to virnucd: state-dir and socket permissions, and CURVE for the network.

Three layers, each closing what the one before cannot:

1. The state dir belongs to virnucd's user and is 0700, so no one else can reach the
   ipc sockets, the database or the job parts inside it. With a `group` it is 0710
   and chgrp'd: members may pass through it to the sockets, but not list it. virnucd
   runs under umask 077 (`PRIVATE_UMASK`, its workers inherit it), so everything it
   creates there is its own alone: a member who guesses a name still cannot read the
   database or a job's parts.
2. The ipc sockets are 0600 (0660 with the group): connecting to a unix socket needs
   write permission on it. They are bound under a restrictive umask, so there is no
   moment when one is wider, then chmod'ed to the exact mode.
3. A socket reachable from the network (tcp://, an abstract ipc://@name) has no file
   permissions at all, so it is only bound with CURVE: encryption, the server proven
   by its key, and a ZAP handler (daemon/zap.py) that admits only the client public
   keys found in `curve_allow_dir` or `curve_admin_dir`. Those directories are re-read
   at every handshake, so adding or removing a key takes effect without a restart.
4. The same ZAP handler names the caller of every connection to the control and
   events sockets (the kernel's uid over ipc, the key over CURVE; daemon/caller.py),
   which decides what each request may see and do (daemon/authz.py).

The worker socket stays plain (no CURVE) and 0600 even with a group: only our own
worker processes connect to it, and a stranger there could forge checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import zmq
import zmq.asyncio
from zmq.auth import load_certificate
from zmq.auth.asyncio import AsyncioAuthenticator

from virnuc.protocol.constants import needs_curve, socket_file

from .rate_limit import RateLimitedWarning

if TYPE_CHECKING:
    from .config import DaemonConfig

log = structlog.get_logger()

ZAP_DOMAIN = b"virnuc"  # the public sockets' ZAP domain (any non-empty name would do)
KEY_LENGTH = 40  # a CURVE key in Z85, as zmq.auth writes it
GENERATE_HINT = "virnucctl keys generate --dir {dir} --name {name}"


class AccessError(Exception):
    """Raised when a state dir, a socket or a CURVE key cannot be made safe to use.

    The message names the path and says what to run or change.
    """


# --- the state dir and the ipc socket files ----------------------------------------------


PRIVATE_UMASK = 0o077  # virnucd's and its workers': files 0600, dirs 0700


def dir_mode(gid: int | None) -> int:
    """The state dir's: with a group, search (x) but not read (r) for its members."""
    return 0o710 if gid is not None else 0o700


def socket_mode(gid: int | None) -> int:
    return 0o660 if gid is not None else 0o600


def prepare_state_dir(state_dir: Path, gid: int | None) -> None:
    """Create the state dir or take over an existing one, with exactly our mode.

    A dir owned by someone else is refused rather than fixed: its owner could read
    or replace anything we put there, and chmod would fail anyway.
    """
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=dir_mode(gid))
        info = state_dir.stat()
    except OSError as exc:
        raise AccessError(f"cannot create state dir {state_dir}: {exc}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise AccessError(f"state dir {state_dir} exists and is not a directory")
    if info.st_uid != os.geteuid():
        raise AccessError(
            f"state dir {state_dir} belongs to {_user(info.st_uid)}, not to {_user(os.geteuid())} "
            f"who runs virnucd; run virnucd as {_user(info.st_uid)}, or use a state dir "
            "of your own (--state-dir)"
        )
    set_mode(state_dir, dir_mode(gid), gid)


def set_mode(path: Path, mode: int, gid: int | None) -> None:
    """chgrp (when a group is configured) and chmod one path of ours."""
    try:
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
    except OSError as exc:
        member = " (virnucd's user must be in the configured group)" if gid is not None else ""
        raise AccessError(f"cannot set the permissions of {path}: {exc}{member}") from exc


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def restrict_existing(database: Path, jobs_dir: Path) -> None:
    """Make private what an older virnucd (no umask of its own) left readable: the
    database with its WAL files (0600) and the jobs' parts dir (0700, which hides every
    part inside). Missing ones are skipped; one we cannot chmod raises AccessError."""
    wal_files = [database.with_name(database.name + suffix) for suffix in ("-wal", "-shm")]
    for path, mode in [(database, 0o600), *((p, 0o600) for p in wal_files), (jobs_dir, 0o700)]:
        try:
            os.chmod(path, mode)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise AccessError(
                f"cannot make {path} private ({exc}); it must belong to {_user(os.geteuid())} "
                f"who runs virnucd: chown it, or chmod {mode:o} it"
            ) from exc


@contextlib.contextmanager
def private_umask(gid: int | None) -> Iterator[None]:
    """Files created meanwhile (the socket a bind makes) get at most our socket mode
    and never more than `PRIVATE_UMASK` allows: 0600. restrict_socket_file then sets
    the socket's exact mode, 0660 with a group.

    The umask is process-wide; binding is synchronous and short, and anything else
    created meanwhile only ends up more private.
    """
    previous = os.umask(PRIVATE_UMASK | (0o777 & ~socket_mode(gid)))
    try:
        yield
    finally:
        os.umask(previous)


def restrict_socket_file(endpoint: str, gid: int | None) -> None:
    """chmod (and chgrp) the socket file of an ipc:// endpoint just bound."""
    path = socket_file(endpoint)
    if path is not None:
        set_mode(path, socket_mode(gid), gid)


# --- CURVE -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurveServer:
    """The server's key pair, and where the allowed clients' public keys are."""

    public: bytes
    secret: bytes
    allow_dir: Path

    @classmethod
    def load(cls, key_file: Path, allow_dir: Path) -> CurveServer:
        """Read and check the keys at start-up, so a mistake stops virnucd, not a client."""
        public, secret = _read_server_key(key_file)
        if not allow_dir.is_dir():
            raise AccessError(
                f"curve_allow_dir {allow_dir} does not exist; create it and copy each "
                f"client's public key (NAME.key) into it: mkdir -p {allow_dir} && "
                f"cp client.key {allow_dir}/NAME.key"
            )
        return cls(public, secret, allow_dir)

    def apply(self, socket: zmq.Socket[Any]) -> None:
        """Make `socket` a CURVE server; call before bind."""
        socket.curve_server = True
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public


def _read_server_key(key_file: Path) -> tuple[bytes, bytes]:
    hint = GENERATE_HINT.format(dir=key_file.parent, name=key_file.name.split(".")[0])
    if not key_file.is_file():
        raise AccessError(
            f"curve = true but the server key {key_file} does not exist; create it with: {hint}"
        )
    if key_file.stat().st_mode & 0o007:
        raise AccessError(
            f"the server's secret key {key_file} is readable by every user; "
            f"chmod 600 {key_file}, then make a new pair ({hint}) since it may be known"
        )
    try:
        public, secret = load_certificate(key_file)
    except (OSError, ValueError) as exc:
        raise AccessError(f"cannot read the server key {key_file}: {exc}") from exc
    if secret is None:
        raise AccessError(
            f"{key_file} holds no secret key; curve_server_key must name the "
            "NAME.key_secret file (the NAME.key file is the public half, for clients)"
        )
    if len(public) != KEY_LENGTH or len(secret) != KEY_LENGTH:
        raise AccessError(f"{key_file} is not a CURVE key file written by: {hint}")
    return public, secret


class AllowedClients:
    """The ZAP credentials provider: is this client key in `curve_allow_dir` now?

    Called by pyzmq's authenticator for every CURVE handshake, on the event loop.
    Reading a directory of small files per connection is cheap, and it makes
    revoking a key (deleting its file) effective for the next connection. It never
    raises: an exception would end the authenticator's task.
    """

    def __init__(self, allow_dir: Path):
        self.allow_dir = allow_dir
        self._warned = RateLimitedWarning()

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key in self.keys()
        if not allowed:
            self._warned(
                "access.client_refused",
                key=key.decode(errors="replace"),
                advice=f"to admit it, put its public NAME.key file into {self.allow_dir}",
            )
        return allowed

    def keys(self) -> set[bytes]:
        """The public keys in the allow dir now; unreadable files are logged and skipped."""
        return set(self.named_keys())

    def named_keys(self) -> dict[bytes, str]:
        """Each public key in the allow dir now, to the NAME of its NAME.key file."""
        keys: dict[bytes, str] = {}
        try:
            files = sorted(self.allow_dir.glob("*.key"))
        except OSError as exc:
            self._warned("access.allow_dir_unreadable", dir=str(self.allow_dir), error=str(exc))
            return keys
        for path in files:
            try:
                keys[load_certificate(path)[0]] = path.name.removesuffix(".key")
            except (OSError, ValueError) as exc:
                self._warned("access.bad_client_key", path=str(path), error=str(exc))
        return keys


def start_authenticator(
    context: zmq.asyncio.Context, curve: CurveServer | None
) -> AsyncioAuthenticator | None:
    """Install pyzmq's ZAP handler on `context`; must run before any CURVE socket binds.

    Without a ZAP handler libzmq lets every CURVE client in, whatever its key. Only the
    worker hub's own context uses this; the client sockets' handler is daemon/zap.py.
    """
    if curve is None:
        return None
    auth = AsyncioAuthenticator(context)
    auth.start()
    allowed = AllowedClients(curve.allow_dir)
    auth.configure_curve_callback(domain="*", credentials_provider=allowed)
    count = len(allowed.keys())
    log.info("access.curve", allow_dir=str(curve.allow_dir), client_keys=count)
    if count == 0:
        log.warning(
            "access.no_client_keys",
            allow_dir=str(curve.allow_dir),
            advice="no client can connect until a public key (NAME.key) is copied there",
        )
    return auth


def stop_authenticator(auth: AsyncioAuthenticator | None) -> None:
    """Close the ZAP socket; after the CURVE sockets, before the context terminates."""
    if auth is not None:
        auth.stop()


# --- binding the public sockets ----------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    """How the control and events sockets listen: file modes, and CURVE if configured."""

    gid: int | None = None
    curve: CurveServer | None = None

    @classmethod
    def from_config(cls, config: DaemonConfig) -> Listener:
        if not config.curve:
            return cls(config.group_id)
        curve = CurveServer.load(config.server_key_file, config.client_keys_dir)
        return cls(config.group_id, curve)

    def bind(self, socket: zmq.Socket[Any], endpoint: str) -> None:
        """Bind as a CURVE server when configured, the socket file private either way;
        if that fails the socket is closed (nothing is left to clean up) and it raises."""
        try:
            self._bind(socket, endpoint)
        except BaseException:
            socket.close(linger=0)
            raise

    def _bind(self, socket: zmq.Socket[Any], endpoint: str) -> None:
        # With a ZAP domain libzmq asks our ZAP handler (daemon/zap.py) about every
        # connection, NULL ones over ipc too, and stamps its answer (the sealed Caller)
        # on each message as User-Id. Without one, a NULL peer would get no identity.
        socket.zap_domain = ZAP_DOMAIN
        if self.curve is not None:
            self.curve.apply(socket)
        elif needs_curve(endpoint):  # config.py refuses this; never bind it by mistake
            raise AccessError(f"refusing to listen on {endpoint} without CURVE")
        try:
            with private_umask(self.gid):
                socket.bind(endpoint)
        except zmq.ZMQError as exc:
            raise AccessError(f"cannot listen on {endpoint}: {exc}") from exc
        restrict_socket_file(endpoint, self.gid)
