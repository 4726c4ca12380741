"""Telling "the disk is full" apart from every other failure, and saying how full.

A full disk is not the job's fault and frees up again: the scheduler keeps what is
verified and retries (docs/architecture.md §5), instead of failing the job as it
does for a real error. Both ways the kernel and SQLite say it land here.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"


def is_no_space(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, says a disk or quota is full."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return True
        if isinstance(seen, sqlite3.Error) and getattr(seen, "sqlite_errorcode", None) == (
            _SQLITE_FULL
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def free_bytes(path: Path) -> int | None:
    """Free space for unprivileged writers on the filesystem holding `path` (its
    nearest existing ancestor); None when it cannot be asked."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def human(size: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, as df -H prints them)."""
    if size < 1000:
        return f"{size} B"
    value = size / 1000
    for unit in ("kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def describe(path: Path, needed: int | None) -> str:
    """'no space on /out: 1.2 MB free, about 3.4 MB needed' — what `status` shows."""
    free = free_bytes(path)
    parts = [f"{human(free)} free" if free is not None else "free space unknown"]
    if needed is not None:
        parts.append(f"about {human(needed)} needed")
    return f"no space on {path}: {', '.join(parts)}"
