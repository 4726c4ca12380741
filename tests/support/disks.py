"""Real full disks for tests: a small tmpfs mounted for the test, and a filler file
that takes every free block. Mounting needs root (CI runs as root); elsewhere the
tests that use them are skipped with the reason."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from virnuc.daemon.progress.log import ProgressLog


@contextlib.contextmanager
def tmpfs(path: Path, size: int, mode: int = 0o755) -> Iterator[Path]:
    """Mount a `size`-byte tmpfs on `path` (created) for the duration of the block."""
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs root to mount a tmpfs (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode={mode:o}"
    try:
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError as exc:
        pytest.skip(f"cannot run mount: {exc}")
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True, timeout=10)


def fill(disk: Path, name: str = "filler") -> Path:
    """Leave no free block on `disk`: write a filler until ENOSPC; returns its path."""
    filler = disk / name
    with filler.open("wb", buffering=0) as handle:
        for chunk in (65536, 512):  # big writes, then the last small blocks
            try:
                while True:
                    handle.write(bytes(chunk))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


def cap_pages(progress: ProgressLog, pages: int | None) -> None:
    """SQLite's own SQLITE_FULL, as a full disk gives it, without root: the database
    may not grow past `pages` (None: its size now). Call it on the log's thread,
    which owns the connection: `await progress._call_once(cap_pages, progress, n)`."""
    conn = progress._store.conn
    limit = pages or conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {limit}")
