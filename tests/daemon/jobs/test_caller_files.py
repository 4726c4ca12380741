"""Inputs and the output directory opened with the caller's own rights, with real Unix
users (alice and bob, members of virnucd's group): what alice may not read or write is
refused, however she names it, and what virnucd makes for her is hers to change."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from virnuc.daemon.jobs import caller_files
from virnuc.daemon.jobs.caller_files import (
    CallerRefused,
    OutputMoved,
    create_output,
    find_output,
    open_input,
    reopen_output,
)
from virnuc.daemon.jobs.file_rights import (
    ACCESS_ACL,
    GROUP_OBJ,
    MASK,
    OTHER,
    USER,
    USER_OBJ,
    AclEntry,
    Who,
    encode_acl,
)

from tests.support.unix_users import UnixUsers, User

FASTA = ">r1\nACGT\n"


def who(user: User) -> Who:
    return Who(user.uid, frozenset(user.groups))


def owner(user: User) -> str:
    return f"uid:{user.uid}"


@pytest.fixture
def homes(unix_users: UnixUsers) -> UnixUsers:
    return unix_users.empty_homes()


def file_of(user: User, path: Path, mode: int, text: str = FASTA) -> Path:
    path.write_text(text)
    os.chown(path, user.uid, user.gid)
    path.chmod(mode)
    return path


def dir_of(user: User, path: Path, mode: int) -> Path:
    path.mkdir()
    os.chown(path, user.uid, user.gid)
    path.chmod(mode)
    return path


def kernel_lets_read(users: UnixUsers, user: User, path: Path) -> bool:
    """What the kernel says when `user` opens `path` for reading."""
    done = users.python_as(user, f"open({str(path)!r}).read()")
    return done.returncode == 0


def read_as(path: Path, caller: Who | None) -> str:
    with open_input(str(path), caller) as opened:
        return os.pread(opened.fd, 100, 0).decode()


# --- inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o640])
def test_alice_cannot_open_bobs_private_file(homes: UnixUsers, mode: int) -> None:
    secret = file_of(homes.bob, homes.home(homes.bob) / "secret.fa", mode)
    assert not kernel_lets_read(homes, homes.alice, secret)
    with pytest.raises(CallerRefused) as refused:
        read_as(secret, who(homes.alice))
    assert refused.value.forbidden
    name = f"{homes.alice.name} (uid {homes.alice.uid})"
    assert refused.value.message == f"input {secret}: {name} may not read it"


def test_alice_cannot_open_bobs_file_through_her_own_symlink(homes: UnixUsers) -> None:
    secret = file_of(homes.bob, homes.home(homes.bob) / "secret.fa", 0o640)
    link = homes.home(homes.alice) / "mine.fa"
    link.symlink_to(secret)
    os.lchown(link, homes.alice.uid, homes.alice.gid)
    with pytest.raises(CallerRefused) as refused:
        read_as(link, who(homes.alice))
    assert refused.value.forbidden
    assert str(link) in refused.value.message


def test_a_file_in_a_directory_alice_cannot_search_is_refused_without_saying_if_it_exists(
    homes: UnixUsers,
) -> None:
    private = dir_of(homes.bob, homes.home(homes.bob) / "private", 0o700)
    shared = file_of(homes.bob, private / "shared.fa", 0o644)
    assert not kernel_lets_read(homes, homes.alice, shared)
    messages = []
    for path in (shared, private / "absent.fa"):
        with pytest.raises(CallerRefused) as refused:
            read_as(path, who(homes.alice))
        messages.append(refused.value.message.replace(path.name, "NAME"))
    assert messages[0] == messages[1]  # an absent file reads as a present one


def test_alice_opens_her_own_file_and_a_world_readable_one_of_bob(homes: UnixUsers) -> None:
    mine = file_of(homes.alice, homes.home(homes.alice) / "mine.fa", 0o600)
    public = file_of(homes.bob, homes.home(homes.bob) / "public.fa", 0o644)
    assert read_as(mine, who(homes.alice)) == FASTA
    assert read_as(public, who(homes.alice)) == FASTA


def test_relative_symlinks_and_dotdot_are_resolved_by_the_walk(homes: UnixUsers) -> None:
    mine = file_of(homes.alice, homes.home(homes.alice) / "mine.fa", 0o600)
    sub = dir_of(homes.alice, homes.home(homes.alice) / "sub", 0o700)
    (sub / "up").symlink_to("../mine.fa")
    with open_input(str(sub / "up"), who(homes.alice)) as opened:
        assert opened.real == str(mine)
        assert opened.st.st_ino == mine.stat().st_ino


def test_a_symlink_loop_is_refused_by_the_os(homes: UnixUsers) -> None:
    loop = homes.home(homes.alice) / "loop"
    loop.symlink_to(loop.name)
    with pytest.raises(OSError, match="Too many levels of symbolic links") as refused:
        read_as(loop, who(homes.alice))
    assert refused.value.errno == errno.ELOOP


def set_acl(path: Path, *entries: AclEntry) -> None:
    os.setxattr(path, ACCESS_ACL, encode_acl(list(entries)))


def test_a_named_user_acl_lets_alice_read_bobs_file(homes: UnixUsers) -> None:
    secret = file_of(homes.bob, homes.home(homes.bob) / "secret.fa", 0o600)
    a = homes.alice.uid
    set_acl(
        secret,
        *(AclEntry(USER_OBJ, 6), AclEntry(USER, 4, a), AclEntry(GROUP_OBJ, 0)),
        *(AclEntry(MASK, 4), AclEntry(OTHER, 0)),
    )
    assert kernel_lets_read(homes, homes.alice, secret)
    assert read_as(secret, who(homes.alice)) == FASTA


def test_an_acl_mask_keeps_alice_from_bobs_file(homes: UnixUsers) -> None:
    secret = file_of(homes.bob, homes.home(homes.bob) / "secret.fa", 0o600)
    set_acl(
        secret,
        *(AclEntry(USER_OBJ, 6), AclEntry(USER, 4, homes.alice.uid), AclEntry(GROUP_OBJ, 0)),
        *(AclEntry(MASK, 0), AclEntry(OTHER, 0)),
    )
    assert not kernel_lets_read(homes, homes.alice, secret)
    with pytest.raises(CallerRefused):
        read_as(secret, who(homes.alice))


def test_without_user_rights_the_walk_checks_nothing_of_its_own(homes: UnixUsers) -> None:
    """A key mapped to no user, and virnucd's own user: virnucd's rights (root here)."""
    secret = file_of(homes.bob, homes.home(homes.bob) / "secret.fa", 0o600)
    assert read_as(secret, None) == FASTA
    assert caller_files.rights_of(None) is None
    assert caller_files.rights_of_owner(f"uid:{os.geteuid()}") is None
    assert caller_files.rights_of_owner("key:laptop") is None


# --- the output directory ------------------------------------------------------------------


def test_alice_cannot_write_into_bobs_directory(homes: UnixUsers) -> None:
    results = dir_of(homes.bob, homes.home(homes.bob) / "results", 0o755)
    for target in (results, results / "new"):
        with pytest.raises(CallerRefused) as refused:
            find_output(str(target), who(homes.alice))
        assert refused.value.forbidden
        assert "may not write there" in refused.value.message


def test_the_directory_virnucd_makes_for_alice_is_hers_to_change(homes: UnixUsers) -> None:
    target = homes.home(homes.alice) / "runs" / "out"
    out = find_output(str(target), who(homes.alice))
    try:
        made = create_output(out, who(homes.alice))
    finally:
        out.close()
    assert made == f"{target.stat().st_dev}:{target.stat().st_ino}"
    written = reopen_output(str(target), made, owner(homes.alice))
    try:  # what virnucd writes, as it writes it: through the opened directory
        for name in ("a.txt", "b.txt", "c.txt"):
            Path(written.path, name).write_text("virnucd's\n")
    finally:
        written.close()
    changes = (
        f"import os; d = {str(target)!r}; os.remove(d + '/a.txt');"
        " os.rename(d + '/b.txt', d + '/renamed.txt'); open(d + '/c.txt', 'a').write('hers\\n');"
        " os.rename(d, d + '-kept')"
    )
    done = homes.python_as(homes.alice, changes)
    assert done.returncode == 0, done.stderr
    kept = target.with_name("out-kept")
    assert sorted(os.listdir(kept)) == ["c.txt", "renamed.txt"]
    assert (kept / "c.txt").read_text() == "virnucd's\nhers\n"


def test_a_directory_swapped_for_a_symlink_after_submit_is_refused(homes: UnixUsers) -> None:
    target = homes.home(homes.alice) / "out"
    out = find_output(str(target), who(homes.alice))
    made = create_output(out, who(homes.alice))
    out.close()
    victim = dir_of(homes.bob, homes.home(homes.bob) / "victim", 0o777)
    target.rename(target.with_name("moved"))
    target.symlink_to(victim)
    with pytest.raises(OutputMoved) as refused:
        reopen_output(str(target), made, owner(homes.alice))
    assert "no longer the directory submitted" in str(refused.value)
    assert os.listdir(victim) == []


def test_an_older_job_without_an_identity_writes_to_its_path(homes: UnixUsers) -> None:
    target = reopen_output("/somewhere/out", None, owner(homes.alice))
    assert (target.path, target.fd) == ("/somewhere/out", None)


@pytest.fixture
def no_acl_mount(homes: UnixUsers) -> Iterator[Path]:
    """A ramfs (a file system without POSIX ACLs) in alice's home, hers to write."""
    mount = homes.home(homes.alice) / "ramfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "ramfs", "none", str(mount)], check=False).returncode:
        pytest.skip("cannot mount a ramfs here (no privilege)")
    try:
        os.chown(mount, homes.alice.uid, homes.alice.gid)
        mount.chmod(0o700)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_without_acls_virnucd_asks_alice_to_make_the_directory_and_leaves_none(
    homes: UnixUsers, no_acl_mount: Path
) -> None:
    target = no_acl_mount / "runs" / "out"
    out = find_output(str(target), who(homes.alice))
    try:
        with pytest.raises(CallerRefused) as refused:
            create_output(out, who(homes.alice))
    finally:
        out.close()
    assert "has no POSIX ACLs" in refused.value.message
    assert "create it yourself" in refused.value.message
    assert os.listdir(no_acl_mount) == []  # "runs" was made, then removed
