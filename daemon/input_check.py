"""Is a job's input still the file it was planned from?

Units, parts and resume offsets are byte positions in the input as it was at planning;
a file changed or replaced since would give outputs mixing two files. The planner
records a fingerprint of the file (device, inode, size, modification time in ns), and
it is compared again before every unit is handed out, at the end of planning and
before the outputs are published; a mismatch fails the job, publishing nothing.
A rewrite that keeps the size and resets the modification time is not detected.
"""

from __future__ import annotations

import os
from pathlib import Path


class InputChanged(ValueError):
    """The input is not the file the job was planned from; the message says how."""


def fingerprint(path: str | Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def check_unchanged(path: str | Path, recorded: str | None) -> None:
    """Raise `InputChanged` if `path` no longer matches `recorded` (None: not known,
    a job planned by an older virnuc)."""
    if recorded is None:
        return
    try:
        now = fingerprint(path)
    except OSError as exc:
        raise InputChanged(f"input changed since submission: {path}: {exc.strerror}") from exc
    if now != recorded:
        raise InputChanged(f"input changed since submission: {path}: {_how(recorded, now)}")


def _how(before: str, after: str) -> str:
    dev0, ino0, size0, _ = before.split(":")
    dev1, ino1, size1, _ = after.split(":")
    if (dev0, ino0) != (dev1, ino1):
        return "it was replaced by another file; resubmit the job to use the new one"
    if size0 != size1:
        return f"its size went from {size0} to {size1} bytes; resubmit the job"
    return "it was modified (same size, new modification time); resubmit the job"
