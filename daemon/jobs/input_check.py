"""Are a job's inputs still the files they were planned from?

Units, parts and resume offsets are byte positions in the inputs as they were at
planning; a file changed or replaced since would give outputs mixing two files. The
scheduler records a fingerprint of every input (device, inode, size, modification time
in ns; one `dev:ino:size:mtime` per file, joined by ';' in input order, so a
one-file job's fingerprint reads as before), and it is compared again before every
unit is handed out, at the end of planning and before the outputs are published; a
mismatch in any file fails the job, publishing nothing. A rewrite that keeps the size
and resets the modification time is not detected here (the unit digests catch it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

SEPARATOR = ";"


class InputChanged(ValueError):
    """An input is not the file the job was planned from; the message says which, how."""


def fingerprint(paths: Sequence[str | Path]) -> str:
    """The fingerprint of every input, in order (raises OSError)."""
    return SEPARATOR.join(_one(path) for path in paths)


def fingerprint_if_readable(paths: Sequence[str | Path]) -> str | None:
    """`fingerprint`, or None when an input cannot be read (planning then says why)."""
    try:
        return fingerprint(paths)
    except OSError:
        return None


def _one(path: str | Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def check_unchanged(paths: Sequence[str | Path], recorded: str | None) -> None:
    """Raise `InputChanged` if any of `paths` no longer matches `recorded` (None: not
    known, a job planned by an older virnuc)."""
    if recorded is None:
        return
    before = recorded.split(SEPARATOR)
    if len(before) != len(paths):  # not for a job's own row: its inputs never change
        raise InputChanged(
            f"input changed since submission: {len(before)} input(s) were planned, "
            f"{len(paths)} given"
        )
    for path, was in zip(paths, before, strict=True):
        try:
            now = _one(path)
        except OSError as exc:
            raise InputChanged(f"input changed since submission: {path}: {exc.strerror}") from exc
        if now != was:
            raise InputChanged(f"input changed since submission: {path}: {_how(was, now)}")


def _how(before: str, after: str) -> str:
    dev0, ino0, size0, _ = before.split(":")
    dev1, ino1, size1, _ = after.split(":")
    if (dev0, ino0) != (dev1, ino1):
        return "it was replaced by another file; resubmit the job to use the new one"
    if size0 != size1:
        return f"its size went from {size0} to {size1} bytes; resubmit the job"
    return "it was modified (same size, new modification time); resubmit the job"
