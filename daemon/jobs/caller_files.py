"""Open a job's inputs and its output directory with the rights of the caller who
submitted it, not only virnucd's.

virnucd runs as its own user and reads and writes for members of its group. Were its
own rights the test, alice could submit bob's 0640 file (virnucd, in his group, may
read it) and get its records back, or write her outputs into his directory. So every
path is walked here component by component from "/", each one opened with
O_PATH|O_NOFOLLOW relative to the directory before it, symlinks read and followed by
us (at most 40, as the kernel), and the caller's right to search every directory it
passes, to read an input, to write the output directory is judged on the very object
opened (file_rights.py), never on a path resolved again later. What the caller may not
reach is refused as FORBIDDEN, saying no more than she could learn herself.

A caller with no Unix user (a CURVE key mapped to none) and virnucd's own user (the
private daemon of `virnucctl predict`) get `None` rights: the walk checks nothing of
its own and the kernel judges virnucd, as before; the config's roots apply to all.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from ..caller import Caller, describe_user, user_groups
from .file_rights import NO_ACL_SUPPORT, READ, SEARCH, WRITE, Who, fd_path, grant_directory, may_at

MAX_LINKS = 40  # the kernel's limit on symlinks followed in one lookup
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class CallerRefused(Exception):
    """The caller may not reach the path, or it is not what it must be; `forbidden`
    tells a right the caller lacks (FORBIDDEN) from a path that is wrong (invalid)."""

    def __init__(self, message: str, *, forbidden: bool = False):
        super().__init__(message)
        self.message = message
        self.forbidden = forbidden


def rights_of(caller: Caller | None) -> Who | None:
    """The rights to judge a caller's files by; None: virnucd's own (see above)."""
    if caller is None or caller.uid is None or caller.uid == os.geteuid():
        return None
    return Who(caller.uid, caller.groups)


def rights_of_owner(owner: str | None) -> Who | None:
    """`rights_of` for a job's recorded owner ("uid:1001"), its groups as now."""
    if owner is None or not owner.startswith("uid:"):
        return None
    uid = int(owner.removeprefix("uid:"))
    if uid == os.geteuid():
        return None
    return Who(uid, user_groups(uid))


def who_text(who: Who) -> str:
    return describe_user(who.uid)


@dataclass
class Walk:
    """Where a walk stands: a stack of open directory descriptors from "/", and the
    names that lead from "/" to the last (the real path, symlinks resolved)."""

    dirs: list[int]
    names: list[str] = field(default_factory=list)

    @property
    def here(self) -> int:
        return self.dirs[-1]

    def real(self, *more: str) -> str:
        return "/" + "/".join([*self.names, *more])

    def push(self, fd: int, name: str) -> None:
        self.dirs.append(fd)
        self.names.append(name)

    def pop(self) -> None:
        if len(self.dirs) > 1:  # ".." of "/" is "/"
            os.close(self.dirs.pop())
            self.names.pop()

    def to_root(self) -> None:
        while len(self.dirs) > 1:
            self.pop()

    def close(self) -> None:
        for fd in self.dirs:
            os.close(fd)
        self.dirs.clear()


@dataclass
class Found:
    """The end of a walk: `fd` (O_PATH) on the object (`leaf` its name when it is no
    directory), or None and `missing` the names that do not exist below the last
    directory reached (`walk.here`)."""

    walk: Walk
    fd: int | None
    missing: list[str]
    leaf: str = ""

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.walk.close()

    @property
    def real(self) -> str:
        return self.walk.real(*([self.leaf] if self.leaf else []), *self.missing)


def find(path: str, who: Who | None, *, denied: str, allow_missing: bool = False) -> Found:
    """Walk `path` (absolute) as `who`; raises CallerRefused with `denied` when `who`
    may not search a directory on the way, OSError for what the OS refuses (ENOENT
    unless `allow_missing`, ELOOP, ENOTDIR...)."""
    if not path.startswith("/"):
        raise CallerRefused(f"{path}: not an absolute path")
    walk = Walk([os.open("/", _PATH_FLAGS | os.O_DIRECTORY)])
    try:
        return _walk(walk, deque(path.split("/")), who, denied, allow_missing)
    except BaseException:
        walk.close()
        raise


def _walk(walk: Walk, todo: deque[str], who: Who | None, denied: str, allow_missing: bool) -> Found:
    links = 0
    while todo:
        name = todo.popleft()
        if name in ("", "."):
            continue
        if name == "..":
            walk.pop()
            continue
        if who is not None and not may_at(who, walk.here, SEARCH):
            raise CallerRefused(denied, forbidden=True)
        try:
            fd = _open_component(name, walk.here)
        except FileNotFoundError:
            rest = [n for n in todo if n not in ("", ".")]
            if not allow_missing or ".." in rest:
                raise
            return Found(walk, None, [name, *rest])
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):
            links += 1
            target = _read_link(fd)
            if links > MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
            if target.startswith("/"):
                walk.to_root()
            todo.extendleft(reversed(target.split("/")))
        elif stat.S_ISDIR(mode):
            walk.push(fd, name)
        elif any(n not in ("", ".") for n in todo):
            os.close(fd)  # the error names the file the path runs into
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), walk.real(name))
        else:
            return Found(walk, fd, [], leaf=name)
    return Found(walk, os.dup(walk.here), [])  # a directory: the top of the stack


def _open_component(name: str, dir_fd: int) -> int:
    """O_PATH on `name` itself (never followed). A directory is asked for first: an
    O_PATH open that does not ask for one leaves an automount point (autofs homes)
    unmounted; a symlink or a file then answers ENOTDIR and is opened as what it is."""
    try:
        return os.open(name, _PATH_FLAGS | os.O_DIRECTORY, dir_fd=dir_fd)
    except NotADirectoryError:
        return os.open(name, _PATH_FLAGS, dir_fd=dir_fd)


def _read_link(fd: int) -> str:
    try:
        return os.readlink("", dir_fd=fd)  # readlinkat(fd, ""): this very link
    finally:
        os.close(fd)


# --- inputs --------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenedInput:
    fd: int  # O_RDONLY on the regular file the caller may read
    st: os.stat_result
    real: str

    def fingerprint(self) -> str:
        """As input_check.py fingerprints a path, taken from this very object."""
        st = self.st
        return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


@contextmanager
def open_input(path: str, who: Who | None) -> Iterator[OpenedInput]:
    """Open the input `path` for reading as `who` could; raises CallerRefused (the
    caller lacks a right; not a regular file) or OSError."""
    denied = _denied("input", path, who, "read it")
    found = find(path, who, denied=denied)
    real = found.real
    try:
        assert found.fd is not None
        st = os.fstat(found.fd)
        if stat.S_ISDIR(st.st_mode):
            raise CallerRefused(f"input {path}: is a directory, not a FASTA or FASTQ file")
        if not stat.S_ISREG(st.st_mode):
            raise CallerRefused(
                f"input {path}: not a regular file (a device, FIFO or socket cannot be planned)"
            )
        if who is not None and not may_at(who, found.fd, READ):
            raise CallerRefused(denied, forbidden=True)
        fd = os.open(fd_path(found.fd), os.O_RDONLY | os.O_CLOEXEC)  # this object again
    finally:
        found.close()
    try:
        yield OpenedInput(fd, os.fstat(fd), real)
    finally:
        os.close(fd)


def _denied(kind: str, path: str, who: Who | None, what: str) -> str:
    """The refusal of a right `who` lacks: names the path as given and the caller, and
    nothing the caller could not learn itself (not even whether the file exists)."""
    name = "virnucd" if who is None else who_text(who)
    return f"{kind} {path}: {name} may not {what}"


# --- the output directory --------------------------------------------------------------


@dataclass
class OutputDir:
    """The output directory as found at submit: `found.fd` (O_PATH) when it exists,
    else `found.missing`, the names below `found.walk.here` that submit will create."""

    path: str
    found: Found

    @property
    def real(self) -> str:
        return self.found.real

    @property
    def exists(self) -> bool:
        return self.found.fd is not None

    def close(self) -> None:
        self.found.close()


def find_output(path: str, who: Who | None) -> OutputDir:
    """Walk to the output directory (or its deepest existing parent) as `who`; raises
    CallerRefused when `who` may not search the way or write the place, OSError else."""
    denied = _denied("output", path, who, "write there")
    found = find(path, who, denied=denied, allow_missing=True)
    out = OutputDir(path, found)
    try:
        place = found.fd if found.fd is not None else found.walk.here
        if not stat.S_ISDIR(os.fstat(place).st_mode):
            raise CallerRefused(f"output {path}: exists and is not a directory")
        if who is not None and not may_at(who, place, WRITE | SEARCH):
            raise CallerRefused(denied, forbidden=True)
        if not os.access(fd_path(place), os.W_OK | os.X_OK):
            where = path if out.exists else found.walk.real()
            raise CallerRefused(
                f"output {path}: {where} is not writable by virnucd (uid {os.geteuid()}); "
                "make it writable by that user or choose another --out"
            )
    except BaseException:
        out.close()
        raise
    return out


def foreign_results(out: OutputDir, who: Who | None, names: tuple[str, ...]) -> list[str]:
    """The result files in a sticky output directory (like /tmp) that `who` could not
    replace or delete itself: another user's, in a directory not `who`'s own."""
    if who is None or out.found.fd is None:
        return []
    dir_st = os.fstat(out.found.fd)
    if not dir_st.st_mode & stat.S_ISVTX or dir_st.st_uid == who.uid:
        return []
    foreign = []
    for name in names:
        try:
            st = os.stat(name, dir_fd=out.found.fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if st.st_uid != who.uid:
            foreign.append(name)
    return foreign


def create_output(out: OutputDir, who: Who | None) -> str:
    """Make the output directory exist (each missing level, virnucd's; `who` is given
    rwx by an ACL on each) and return its identity "DEV:INODE". A refusal removes the
    levels it made."""
    if out.found.fd is not None:
        return identity(out.found.fd)
    walk, made = out.found.walk, 0
    try:
        for name in out.found.missing:
            os.mkdir(name, 0o777, dir_fd=walk.here)
            try:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=walk.here)
            except BaseException:
                os.rmdir(name, dir_fd=walk.here)
                raise
            walk.push(fd, name)
            made += 1
            if who is not None:
                _grant(out, fd, who)
    except BaseException:
        _unmake(walk, made)
        raise
    return identity(walk.here)


def _unmake(walk: Walk, made: int) -> None:
    """Remove the `made` directories on top of the walk's stack, deepest first."""
    for _ in range(made):
        name = walk.names[-1]
        walk.pop()
        with suppress(OSError):
            os.rmdir(name, dir_fd=walk.here)


def _grant(out: OutputDir, fd: int, who: Who) -> None:
    try:
        grant_directory(fd, who)
    except OSError as exc:
        if exc.errno not in NO_ACL_SUPPORT:
            raise
        raise CallerRefused(
            f"output {out.path}: its file system has no POSIX ACLs, so virnucd cannot make "
            f"this directory {who_text(who)}'s; create it yourself and let virnucd's group "
            "write it (chmod g+rwx), then submit again"
        ) from exc


def identity(fd: int) -> str:
    st = os.fstat(fd)
    return f"{st.st_dev}:{st.st_ino}"


class OutputMoved(Exception):
    """The output directory is not the one the job was submitted with, or its owner
    may no longer reach it; nothing was written."""


@dataclass
class WriteTarget:
    """Where to write a job's outputs: `path` names the output directory opened again
    (`fd_path` of `fd`), or is the user's path itself for an older job (`fd` None)."""

    path: str
    fd: int | None = None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def shown(self, exc: OSError, output: str) -> OSError:
        """`exc` naming the user's `output` path instead of `path` (its messages and
        the job's error are read by the user); the same exception, for raising."""
        for attr in ("filename", "filename2"):
            name = getattr(exc, attr)
            if self.fd is not None and isinstance(name, str) and name.startswith(self.path):
                setattr(exc, attr, output + name.removeprefix(self.path))
        return exc


def reopen_output(path: str, recorded: str | None, owner: str | None) -> WriteTarget:
    """The output directory opened again through a walk as its owner: it must be the
    one recorded at submit (its identity "DEV:INODE"), else OutputMoved. Writing through
    `fd_path` of the opened directory, never through `path` again, a symlink or another
    directory put at `path` since is never followed. An older job that recorded no
    identity writes to `path` as before. The caller closes the target."""
    if recorded is None:
        return WriteTarget(path)
    who = rights_of_owner(owner)
    moved = (
        f"output {path}: no longer the directory submitted (replaced or moved since); "
        "nothing was written"
    )
    denied = f"output {path}: {who_text(who) if who else 'virnucd'} may no longer reach it; "
    try:
        found = find(path, who, denied=denied + "nothing was written")
    except CallerRefused as exc:
        raise OutputMoved(exc.message) from exc
    except OSError as exc:
        raise OutputMoved(moved) from exc
    fd, found.fd = found.fd, None
    found.close()
    assert fd is not None
    if identity(fd) != recorded:
        os.close(fd)
        raise OutputMoved(moved)
    return WriteTarget(fd_path(fd), fd)
