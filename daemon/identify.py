"""Who a connecting peer is, from what libzmq proves about it: the rules of daemon/zap.py.

Over ipc (the NULL mechanism) the kernel tells: libzmq appends the peer process's
SO_PEERCRED to the ZAP request's address, "localhost:UID:GID:PID". Over CURVE the
client's public key tells, if it is a NAME.key file in `curve_allow_dir` or (an
admin's) in `curve_admin_dir`; `curve_users` may map NAME to a Unix user, whose
jobs and file rights the key then carries.

Admins: root, virnucd's own user, members of `admin_group` (by the user database,
as a new login of theirs would get), holders of an admin key, and keys mapped to
an admin user. Everyone else sees and acts on their own jobs only.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from zmq.utils import z85

from .access import AllowedClients
from .caller import Caller, describe_user, key_owner, user_groups, user_owner

if TYPE_CHECKING:
    from .config import DaemonConfig

CURVE_KEY_BYTES = 32  # a ZAP request carries the client's key raw; the key files hold Z85


class Refused(Exception):
    """Raised when a peer gets no identity; the message says why (for the log)."""


@dataclass(frozen=True)
class PeerCredentials:
    uid: int
    gid: int
    pid: int


def parse_peer_address(address: str) -> PeerCredentials:
    """The uid, gid and pid libzmq appended to an ipc peer's address.

    Only the last three fields count (the host part is libzmq's to change), and they
    must be three integers after a host with no colon: an IPv6 tcp address, whose
    last groups could look like numbers, is never mistaken for kernel credentials.
    """
    host, *fields = address.rsplit(":", 3)
    if len(fields) != 3 or ":" in host or not all(f.isdigit() for f in fields):
        raise Refused(f"no kernel credentials in the peer address {address!r}")
    uid, gid, pid = (int(f) for f in fields)
    return PeerCredentials(uid, gid, pid)


@dataclass
class Identify:
    """The identity rules, with the configuration they need."""

    allow_dir: Path | None = None  # CURVE client keys; None: no CURVE
    admin_dir: Path | None = None  # CURVE admin keys
    curve_users: dict[str, str] = field(default_factory=dict)
    admin_gid: int | None = None
    own_uid: int = field(default_factory=os.geteuid)

    def __post_init__(self) -> None:
        # One reader per dir, kept: each rate-limits its own complaints (a bad key file).
        self._key_dirs = [
            (AllowedClients(path), admin)
            for path, admin in ((self.admin_dir, True), (self.allow_dir, False))
            if path is not None
        ]

    @classmethod
    def from_config(cls, config: DaemonConfig) -> Identify:
        return cls(
            allow_dir=config.client_keys_dir if config.curve else None,
            admin_dir=config.admin_keys_dir if config.curve else None,
            curve_users=dict(config.curve_users),
            admin_gid=config.admin_group_id,
        )

    def caller(self, mechanism: str, address: str, credentials: list[bytes]) -> Caller:
        """The Caller for one ZAP request; raises `Refused`."""
        if mechanism == "NULL":
            peer = parse_peer_address(address)
            return self.unix_user(peer.uid, peer.gid, peer.pid)
        if mechanism == "CURVE" and credentials and len(credentials[0]) == CURVE_KEY_BYTES:
            return self.key_holder(z85.encode(credentials[0]))
        raise Refused(f"mechanism {mechanism} with these credentials is not accepted")

    def unix_user(self, uid: int, gid: int, pid: int | None = None) -> Caller:
        label = describe_user(uid)  # "alice (uid 1001)" -> "alice (uid 1001, pid 4242)"
        if pid is not None:
            label = f"{label[:-1]}, pid {pid})" if label.endswith(")") else f"{label}, pid {pid}"
        return Caller(user_owner(uid), uid, gid, self.is_admin_user(uid), label, pid)

    def key_holder(self, key: bytes) -> Caller:
        name, admin_key = self._key_name(key)
        user = self.curve_users.get(name)
        if user is None:
            return Caller(key_owner(name), None, None, admin_key, f"key {name}")
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise Refused(f"key {name} is mapped to {user!r}, who is no longer a user") from None
        admin = admin_key or self.is_admin_user(entry.pw_uid)
        label = f"key {name} as {describe_user(entry.pw_uid)}"
        return Caller(user_owner(entry.pw_uid), entry.pw_uid, entry.pw_gid, admin, label)

    def is_admin_user(self, uid: int) -> bool:
        if uid in (0, self.own_uid):
            return True
        if self.admin_gid is None:
            return False
        return self.admin_gid in user_groups(uid)  # the database's, not the process's gid

    def key_counts(self) -> dict[str, int]:
        """How many keys each CURVE key dir holds now (for the start-up log)."""
        return {
            ("admin_keys" if admin else "client_keys"): len(keys.named_keys())
            for keys, admin in self._key_dirs
            if keys.allow_dir.is_dir()
        }

    def _key_name(self, key: bytes) -> tuple[str, bool]:
        """The key's NAME and whether it is an admin key. The dirs are re-read per
        handshake, so deleting a key file locks its holder out from the next
        connection on; an admin dir that does not exist holds no key."""
        for keys, admin in self._key_dirs:
            if admin and not keys.allow_dir.is_dir():
                continue
            name = keys.named_keys().get(key)
            if name is not None:
                return name, admin
        raise Refused(f"client key {key.decode(errors='replace')} is in no allowed key dir")
