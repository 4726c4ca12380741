"""Throwaway Unix users for the tests of who may do what on a shared server.

`unix_users` (a session fixture) creates, as root, a daemon user, a group of members
with two users in it (alice, bob) and an outsider (eve), and removes them all at the
end. Names carry the pytest process id, so parallel workers (and two runs at once)
never share a user.
Not root: the tests that use it are skipped, saying so; under VIRNUC_REQUIRE_USERS=1
(.ci/run) they fail instead.

Their files live under a base dir of their own (`UnixUsers.base`, 0711): pytest's
tmp_path is root's 0700 dir, which no test user can enter. Run a command as one of
them with `run_as` / `popen_as`, which set the user's supplementary groups too
(subprocess's `user=` alone would keep root's).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    @property
    def groups(self) -> list[int]:
        return os.getgrouplist(self.name, self.gid)

    def as_kwargs(self) -> dict[str, Any]:
        """subprocess arguments that run a child as this user, with its groups."""
        return {"user": self.uid, "group": self.gid, "extra_groups": self.groups}


@dataclass(frozen=True)
class UnixUsers:
    daemon: User  # runs virnucd; in the members group so it can hand it the sockets
    alice: User  # a member
    bob: User  # another member
    eve: User  # not a member
    group: str  # the members' group (virnucd's `group` setting)
    admins: str  # an admin group (virnucd's `admin_group`), with no member yet
    base: Path  # 0711, owned by root: each user's home dir below it

    def home(self, user: User) -> Path:
        """The user's own dir (0700 by default; chmod it to share)."""
        path = self.base / user.name
        if not path.exists():
            path.mkdir(mode=0o700)
            os.chown(path, user.uid, user.gid)
        return path

    def empty_homes(self) -> UnixUsers:
        """alice's and bob's homes, searchable by everyone (0711) and emptied: the users
        live for the whole session, so each test starts from clean homes."""
        for user in (self.alice, self.bob):
            home = self.home(user)
            home.chmod(0o711)
            for entry in home.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        return self

    def run_as(self, user: User, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 120)
        return subprocess.run(argv, cwd=self.base, **user.as_kwargs(), **kwargs)

    def popen_as(self, user: User, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        return subprocess.Popen(argv, cwd=self.base, **user.as_kwargs(), **kwargs)

    def python_as(self, user: User, code: str, **kwargs: Any) -> subprocess.CompletedProcess:
        """Run Python `code` as `user` with this checkout's interpreter and packages."""
        return self.run_as(user, [sys.executable, "-c", code], **kwargs)


def _tag() -> str:
    return str(os.getpid())  # user names stay under 32 characters: vn<pid><role>


def _add_user(name: str, groups: list[str]) -> User:
    subprocess.run(["userdel", name], capture_output=True)  # a leftover of a killed run
    argv = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"]
    if groups:
        argv += ["--groups", ",".join(groups)]
    subprocess.run([*argv, name], check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    return User(name, entry.pw_uid, entry.pw_gid)


def _add_group(name: str) -> None:
    subprocess.run(["groupdel", name], capture_output=True)
    subprocess.run(["groupadd", name], check=True, capture_output=True)


def _unavailable(reason: str) -> None:
    if os.environ.get("VIRNUC_REQUIRE_USERS") == "1":
        pytest.fail(f"VIRNUC_REQUIRE_USERS=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def unix_users() -> Iterator[UnixUsers]:
    if os.geteuid() != 0:
        _unavailable("creating throwaway Unix users needs root (CI runs as root)")
    if shutil.which("useradd") is None:
        _unavailable("useradd is not installed")
    tag = _tag()
    group, admins = f"vn{tag}members", f"vn{tag}admins"
    names = [f"vn{tag}{role}" for role in ("daemon", "alice", "bob", "eve")]
    for name in (group, admins):
        _add_group(name)
    daemon, alice, bob = (_add_user(name, [group]) for name in names[:3])
    eve = _add_user(names[3], [])
    base = Path(f"/tmp/virnuc-users-{tag}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o711)
    base.chmod(0o711)
    users = UnixUsers(daemon, alice, bob, eve, group, admins, base)
    try:
        _check_reachable(users)
        yield users
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for name in names:
            subprocess.run(["userdel", name], capture_output=True)
        for name in (group, admins):
            subprocess.run(["groupdel", name], capture_output=True)


def _check_reachable(users: UnixUsers) -> None:
    """A test user must be able to run this checkout's Python and import virnuc."""
    done = users.python_as(users.eve, "import virnuc.client.cli")
    if done.returncode != 0:
        _unavailable(
            f"user {users.eve.name} cannot import virnuc from {REPO} (every directory "
            f"above it needs o+x; .ci/run sees to it): {done.stderr.strip()[-300:]}"
        )
