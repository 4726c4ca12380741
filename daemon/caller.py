"""Who sent a request, as the kernel or the CURVE handshake proves it, never as a client says.

virnucd's ZAP handler (daemon/zap.py) authenticates every connection to the control
and events sockets: on ipc the uid, gid and pid come from the kernel (SO_PEERCRED,
which libzmq appends to the peer's address), on tcp the client's CURVE key names it.
The handler builds a `Caller` and hands it to libzmq as the connection's User-Id,
*sealed*: serialised and signed with a key that lives only in this process. ZAP's
User-Id wins over any a client puts in its own ZMTP metadata, and the seal makes a
User-Id that did not come from our handler (a socket bound without ZAP by mistake, a
forged one) unusable rather than trusted: `unseal` answers None and the request is
refused.
"""

from __future__ import annotations

import grp
import hashlib
import hmac
import json
import os
import pwd
import secrets
from dataclasses import asdict, dataclass
from functools import cached_property


@dataclass(frozen=True)
class Caller:
    """One authenticated client.

    `owner` is what a job it submits records and what decides who may see the job:
    "uid:1001" for a Unix user (over ipc, or a CURVE key mapped to that user), or
    "key:NAME" for a CURVE key mapped to no user. `uid`/`gid` are the Unix user whose
    file rights apply to its inputs and outputs; None for an unmapped key, which the
    config's roots alone limit. Admins see and may do everything.
    """

    owner: str
    uid: int | None
    gid: int | None
    admin: bool
    label: str  # for logs and messages: "alice (uid 1001, pid 4242)", "key laptop"
    pid: int | None = None

    def may_see(self, owner: str | None) -> bool:
        """Whether this caller may see (and act on) a job of `owner` (None: an older
        job that recorded no owner, which only admins see)."""
        return self.admin or (owner is not None and owner == self.owner)

    @cached_property
    def groups(self) -> frozenset[int]:
        """The caller's groups as the user database gives them (what a new login of the
        user gets), plus the primary gid the kernel reported. Empty without a uid."""
        if self.uid is None:
            return frozenset()
        primary = {self.gid} if self.gid is not None else set()
        return user_groups(self.uid) | primary


def user_groups(uid: int) -> frozenset[int]:
    """The user's groups as the user database gives them (what a new login of the user
    gets); none for a uid with no passwd entry."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return frozenset()
    return frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))


def user_owner(uid: int) -> str:
    return f"uid:{uid}"


def key_owner(name: str) -> str:
    return f"key:{name}"


def describe_user(uid: int) -> str:
    """ "alice (uid 1001)", or "uid 1001" for a uid with no passwd entry."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class CallerSeal:
    """Signs the `Caller` our ZAP handler sets as User-Id, and checks it on the way back.

    The key is made fresh in each virnucd process: a seal is only ever read by the
    process that made it, for connections made to it.
    """

    def __init__(self, key: bytes | None = None):
        self._key = key or secrets.token_bytes(32)

    def seal(self, caller: Caller) -> str:
        body = json.dumps(asdict(caller), sort_keys=True, separators=(",", ":"))
        return f"{body}|{self._mac(body)}"

    def unseal(self, user_id: str | None) -> Caller | None:
        """The Caller our handler sealed, or None for anything else."""
        if not user_id or "|" not in user_id:
            return None
        body, mac = user_id.rsplit("|", 1)
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            return Caller(**json.loads(body))
        except (ValueError, TypeError):
            return None

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()
