"""`may`: another user's rights on a file, from its mode bits and its POSIX ACL, as the
kernel decides them (each case is checked against the kernel with a real user in
test_caller_files.py)."""

from __future__ import annotations

import os
import stat

import pytest

from virnuc.daemon.jobs.file_rights import (
    GROUP,
    GROUP_OBJ,
    MASK,
    OTHER,
    READ,
    SEARCH,
    USER,
    USER_OBJ,
    WRITE,
    AclEntry,
    AclError,
    Who,
    encode_acl,
    may,
    parse_acl,
)

OWNER, OWNER_GROUP = 1000, 2000
ALICE = Who(1001, frozenset({1001, 3000}))


def st(mode: int) -> os.stat_result:
    """A stat result of a regular file owned by OWNER:OWNER_GROUP with `mode`."""
    return os.stat_result((stat.S_IFREG | mode, 1, 1, 1, OWNER, OWNER_GROUP, 10, 0, 0, 0))


def acl(*entries: tuple[int, int] | tuple[int, int, int]) -> bytes:
    return encode_acl([AclEntry(*entry) for entry in entries])


@pytest.mark.parametrize(
    ("who", "mode", "want", "allowed"),
    [
        (Who(OWNER, frozenset()), 0o600, READ | WRITE, True),
        (Who(OWNER, frozenset({OWNER_GROUP})), 0o060, READ, False),  # the owner's bits decide
        (ALICE, 0o640, READ, False),
        (Who(1001, frozenset({OWNER_GROUP})), 0o640, READ, True),
        (Who(1001, frozenset({OWNER_GROUP})), 0o604, READ, False),  # the group's bits decide
        (ALICE, 0o644, READ, True),
        (ALICE, 0o755, WRITE, False),
        (Who(0, frozenset()), 0o000, READ | WRITE | SEARCH, True),  # root
    ],
)
def test_mode_bits_decide_without_an_acl(who: Who, mode: int, want: int, allowed: bool) -> None:
    assert may(who, st(mode), want, None) is allowed


def test_a_named_user_entry_grants_within_the_mask() -> None:
    granted = acl((USER_OBJ, 6), (USER, READ, ALICE.uid), (GROUP_OBJ, 0), (MASK, READ), (OTHER, 0))
    assert may(ALICE, st(0o640), READ, granted)
    masked = acl((USER_OBJ, 6), (USER, 6, ALICE.uid), (GROUP_OBJ, 0), (MASK, 0), (OTHER, 4))
    assert not may(ALICE, st(0o604), READ, masked)  # her entry matches: other never counts


def test_any_matching_group_entry_may_grant_and_the_mask_limits_them() -> None:
    entries = ((GROUP_OBJ, 0), (GROUP, READ, 3000))
    granted = acl((USER_OBJ, 6), *entries, (MASK, READ), (OTHER, 0))
    assert may(Who(1001, frozenset({OWNER_GROUP, 3000})), st(0o640), READ, granted)
    masked = acl((USER_OBJ, 6), *entries, (MASK, 0), (OTHER, 4))
    assert not may(ALICE, st(0o604), READ, masked)


def test_a_user_matching_no_entry_gets_other() -> None:
    entries = acl((USER_OBJ, 6), (USER, 6, 4242), (GROUP_OBJ, 4), (MASK, 6), (OTHER, 4))
    assert may(ALICE, st(0o664), READ, entries)
    assert not may(ALICE, st(0o664), WRITE, entries)


def test_an_acl_round_trips_and_a_malformed_one_is_refused() -> None:
    entries = [AclEntry(USER_OBJ, 7), AclEntry(USER, 5, 1001), AclEntry(OTHER, 0)]
    assert parse_acl(encode_acl(entries)) == entries
    with pytest.raises(AclError):
        parse_acl(b"\x01\x00\x00\x00")
    with pytest.raises(AclError):
        parse_acl(encode_acl(entries)[:-1])
