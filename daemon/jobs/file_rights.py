"""What a Unix user may do to a file or directory, judged as the kernel judges it.

virnucd runs as its own user, so the kernel's own checks (open, os.access) answer for
virnucd, never for the member who submitted a job. `may` evaluates the owner, group
and other mode bits and the file's POSIX access ACL (the `system.posix_acl_access`
extended attribute) for another user's uid and groups, in the kernel's order
(fs/posix_acl.c `posix_acl_permission`): the owner entry; a named-user entry, limited
by the mask; the owning group and named-group entries (any matching entry that grants
it all is enough, limited by the mask); else the other entry. Root may read, write and
search anything (its execute rule does not matter here: no file is run).

The ACL's binary form (linux/posix_acl_xattr.h): a little-endian u32 version (2), then
entries of u16 tag, u16 permission bits, u32 uid or gid. pylibacl needs libacl and
answers no "may this other user" question, so these few lines are ours.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from dataclasses import dataclass

READ, WRITE, SEARCH = 4, 2, 1  # the rwx bits, as in a mode's triplets and in ACL entries

ACCESS_ACL = "system.posix_acl_access"
DEFAULT_ACL = "system.posix_acl_default"

_VERSION = 2
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
_NO_ID = 0xFFFFFFFF
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

#: setxattr errors that mean "this file system keeps no POSIX ACLs".
NO_ACL_SUPPORT = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


@dataclass(frozen=True)
class Who:
    """A Unix user and every group whose rights it has."""

    uid: int
    groups: frozenset[int]


@dataclass(frozen=True)
class AclEntry:
    tag: int
    perm: int
    id: int = _NO_ID


class AclError(ValueError):
    """An ACL attribute that is not in the format above."""


def parse_acl(data: bytes) -> list[AclEntry]:
    if len(data) < _HEADER.size or (len(data) - _HEADER.size) % _ENTRY.size:
        raise AclError(f"an ACL of {len(data)} bytes")
    (version,) = _HEADER.unpack_from(data)
    if version != _VERSION:
        raise AclError(f"ACL version {version}")
    return [AclEntry(*fields) for fields in _ENTRY.iter_unpack(data[_HEADER.size :])]


def encode_acl(entries: list[AclEntry]) -> bytes:
    return _HEADER.pack(_VERSION) + b"".join(_ENTRY.pack(e.tag, e.perm, e.id) for e in entries)


def may(who: Who, st: os.stat_result, want: int, acl: bytes | None) -> bool:
    """Whether `who` has every bit of `want` on the object `st` describes, given its
    access ACL (None: it has none)."""
    if who.uid == 0:
        return True
    if acl is not None:
        return _acl_grants(who, st, want, parse_acl(acl))
    if who.uid == st.st_uid:
        granted = st.st_mode >> 6
    elif st.st_gid in who.groups:
        granted = st.st_mode >> 3
    else:
        granted = st.st_mode
    return granted & want == want


def _acl_grants(who: Who, st: os.stat_result, want: int, entries: list[AclEntry]) -> bool:
    masks = [e.perm for e in entries if e.tag == MASK]
    mask = masks[0] if masks else READ | WRITE | SEARCH
    if who.uid == st.st_uid:
        return _has(entries, USER_OBJ, want)
    for entry in entries:
        if entry.tag == USER and entry.id == who.uid:
            return entry.perm & mask & want == want
    group_entries = [
        e
        for e in entries
        if (e.tag == GROUP_OBJ and st.st_gid in who.groups)
        or (e.tag == GROUP and e.id in who.groups)
    ]
    if group_entries:  # a matching group entry decides, granting or not
        return any(e.perm & mask & want == want for e in group_entries)
    return _has(entries, OTHER, want)


def _has(entries: list[AclEntry], tag: int, want: int) -> bool:
    return any(e.tag == tag and e.perm & want == want for e in entries)


def read_acl(fd: int) -> bytes | None:
    """The access ACL of the object `fd` names (an O_PATH descriptor will do), or None
    when it has none or its file system keeps none."""
    try:
        return os.getxattr(fd_path(fd), ACCESS_ACL)
    except OSError as exc:
        if exc.errno == errno.ENODATA or exc.errno in NO_ACL_SUPPORT:
            return None
        raise


def may_at(who: Who, fd: int, want: int) -> bool:
    """`may` for the object `fd` names, as it is now."""
    return may(who, os.fstat(fd), want, read_acl(fd))


def fd_path(fd: int) -> str:
    """A path naming the object `fd` was opened on (procfs's link to it, which the
    kernel resolves to that object whatever has been renamed or swapped since)."""
    return f"/proc/self/fd/{fd}"


def grant_directory(fd: int, who: Who) -> None:
    """Give `who` read, write and search on the directory `fd`, and on everything
    created in it later (a default ACL), keeping its mode bits for everyone else.

    Raises OSError (errno in NO_ACL_SUPPORT where the file system has no ACLs)."""
    data = _acl_granting(fd, who, READ | WRITE | SEARCH)
    os.setxattr(fd_path(fd), ACCESS_ACL, data)
    os.setxattr(fd_path(fd), DEFAULT_ACL, data)


def grant_file(fd: int, who: Who) -> None:
    """Give `who` read and write on the file `fd`, keeping its mode bits for everyone
    else. Raises OSError (errno in NO_ACL_SUPPORT where the file system has no ACLs)."""
    os.setxattr(fd, ACCESS_ACL, _acl_granting(fd, who, READ | WRITE))


def _acl_granting(fd: int, who: Who, perms: int) -> bytes:
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    return encode_acl(
        [
            AclEntry(USER_OBJ, (mode >> 6) & 7),
            AclEntry(USER, perms, who.uid),
            AclEntry(GROUP_OBJ, (mode >> 3) & 7),
            AclEntry(MASK, perms | ((mode >> 3) & 7)),
            AclEntry(OTHER, mode & 7),
        ]
    )
