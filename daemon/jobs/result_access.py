"""Results handed over to their owner: readable and editable by who submitted the job.

virnucd writes a job's results under its own user, with its private umask (077).
Once they are published, each file virnucd wrote gets a POSIX ACL entry giving the
job's owner read and write, so results in a directory of her own (which she made and
let virnucd's group write) are hers to read, edit, rename and delete, as those in a
directory virnucd created for her already are (its default ACL). Results of virnucd's
own user (`virnucctl predict`, a private daemon) become 0644, what they were before the
private umask. On a file system without ACLs, another owner's results become 0644 too:
readable, and hers to rename or delete through her directory.

Each file is opened without following a symlink and changed through that handle, so
a name swapped for a link to one of virnucd's own files is never touched.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

import structlog

from .caller_files import rights_of_owner
from .file_rights import NO_ACL_SUPPORT, Who, grant_file

log = structlog.get_logger()

SHARED_MODE = 0o644


def hand_over(out_dir: str, names: Iterable[str], owner: str | None) -> None:
    """Give `owner` the files `names` in `out_dir` (the output directory as opened
    again); best effort after publishing: a failure is logged, never raised."""
    who = rights_of_owner(owner)
    for name in names:
        try:
            _hand_over_one(out_dir, name, who)
        except OSError as exc:
            log.warning("outputs.hand_over_failed", file=name, owner=owner, error=str(exc))


def _hand_over_one(out_dir: str, name: str, who: Who | None) -> None:
    dir_fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    finally:
        os.close(dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return  # not a file virnucd wrote
        if who is None:
            os.fchmod(fd, SHARED_MODE)
            return
        try:
            grant_file(fd, who)
        except OSError as exc:
            if exc.errno not in NO_ACL_SUPPORT:
                raise
            os.fchmod(fd, SHARED_MODE)
    finally:
        os.close(fd)
