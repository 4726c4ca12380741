"""Writes that survive a crash: fsync, and publishing a file under its name atomically."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a rename is durable only once its directory is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(path: Path, data: bytes) -> None:
    """Write `data` to `.NAME.partial`, fsync, rename onto `path`, fsync the directory."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.unlink(missing_ok=True)  # a new inode, never one linked elsewhere
    try:
        with tmp.open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
