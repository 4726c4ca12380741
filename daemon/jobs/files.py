"""What a job keeps on disk while it runs: `state_dir/jobs/<job_id>/parts/` (§5 of
docs/architecture.md). SQLite is the truth: a part file it does not record does not
exist, and the directory of a job that ended is removed. A directory whose job SQLite
does not know at all is never deleted: it is set aside in `state_dir/orphaned/`."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from virnuc.parts import unit_prefix


def job_dirs(jobs_dir: Path) -> set[str]:
    """The job ids that have a directory under `jobs_dir`."""
    return {path.name for path in jobs_dir.iterdir()} if jobs_dir.is_dir() else set()


def set_aside(job_dir: Path, aside_dir: Path) -> Path:
    """Move the directory of a job the progress log does not know (a restored or
    replaced database) to `aside_dir`, where nothing deletes it; returns where."""
    aside_dir.mkdir(mode=0o700, exist_ok=True)
    target = aside_dir / f"{job_dir.name}-{int(time.time())}"
    job_dir.rename(target)
    return target


def remove_job_dir(job_dir: Path) -> None:
    shutil.rmtree(job_dir, ignore_errors=True)


def remove_unrecorded_parts(parts_dir: Path, recorded: set[str], unit_id: int | None) -> int:
    """Delete the part files (also temporary dot-files) of `unit_id`, or of every unit,
    whose path is not in `recorded`; returns how many."""
    prefix = "" if unit_id is None else unit_prefix(unit_id)
    removed = 0
    for path in parts_dir.glob("*") if parts_dir.is_dir() else []:
        if path.name.lstrip(".").startswith(prefix) and str(path) not in recorded:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def unlink_all(paths: Iterable[str]) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)
