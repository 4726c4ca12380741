"""compare-precision's private work dir, and the one virnucd it may be shared with.

The dir (`mkdtemp`: 0700, the user's) holds the sample (0600) and both jobs' outputs,
and is removed whatever ends the command. A virnucd that runs as the user (a private
one, or her own) needs nothing more. A shared server's virnucd runs as its own user
(the owner of its ipc:// socket): it is let in by a POSIX ACL naming that user alone,
and only when that user may already read the input the sample is drawn from, so the
sample never reaches anyone who could not read the whole of it (a mistyped
--state-dir pointing at someone else's daemon gets nothing; submit's own rule, that
virnucd reads an input only if the caller may, is kept by virnucd itself).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from virnuc.daemon.caller import describe_user, user_groups
from virnuc.daemon.jobs.file_rights import (
    NO_ACL_SUPPORT,
    READ,
    Who,
    grant_directory,
    grant_file,
    may_at,
)

from .errors import EXIT_INVALID_INPUT, ClientError

SAMPLE_NAME = "sample.fa"


@contextmanager
def work_dir(parent: str | None) -> Iterator[Path]:
    """A fresh 0700 dir in `parent` (default $TMPDIR), removed afterwards."""
    try:
        path = Path(tempfile.mkdtemp(prefix="virnucctl-compare-", dir=parent))
    except OSError as exc:
        where = parent or tempfile.gettempdir()
        raise ClientError(f"cannot make a work dir in {where}: {exc}") from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def share_with_daemon(control: str, work: Path, input_path: str) -> None:
    """Let the virnucd behind `control` into `work` and read the sample, if it runs as
    another user who may read `input_path` (see the module doc)."""
    owner = _socket_owner(control)
    if owner is None or owner == os.getuid():
        return  # virnucd runs as us; or tcp, whose user is not known here
    who = Who(owner, user_groups(owner))
    with _opened(Path(input_path), os.O_RDONLY) as fd:
        readable = may_at(who, fd, READ)
    if not readable:
        raise ClientError(
            f"virnucd runs as {describe_user(owner)}, who may not read {input_path}: "
            "it gets no sample of it either (let it read the input, as for a submit)",
            EXIT_INVALID_INPUT,
        )
    _grant(work, who)


def _grant(work: Path, who: Who) -> None:
    try:
        with _opened(work, os.O_RDONLY | os.O_DIRECTORY) as fd:
            grant_directory(fd, who)
        with _opened(work / SAMPLE_NAME, os.O_RDONLY) as fd:
            grant_file(fd, who)
    except OSError as exc:
        hint = "its file system has no POSIX ACLs" if exc.errno in NO_ACL_SUPPORT else str(exc)
        raise ClientError(
            f"cannot let virnucd (uid {who.uid}) read the sample in {work}: {hint}; "
            "choose another --work-dir"
        ) from None


@contextmanager
def _opened(path: Path, flags: int) -> Iterator[int]:
    fd = os.open(path, flags)
    try:
        yield fd
    finally:
        os.close(fd)


def _socket_owner(control: str) -> int | None:
    """The user an ipc:// virnucd runs as (its socket's owner); None for tcp:// (then
    --work-dir must be a directory it may use) or no socket (the connection says so)."""
    if not control.startswith("ipc://"):
        return None
    try:
        return os.stat(control.removeprefix("ipc://")).st_uid
    except OSError:
        return None
