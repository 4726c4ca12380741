"""What a job keeps on disk while it runs: `state_dir/jobs/<job_id>/parts/` (§5 of
docs/architecture.md). SQLite is the truth: a part file it does not record does not
exist, and the directory of a job that ended is removed."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from virnuc.parts import unit_prefix


def sweep_ended_jobs(jobs_dir: Path, unfinished: set[str]) -> None:
    """Remove the directories of jobs that ended (a crash can leave them)."""
    for job_dir in jobs_dir.iterdir() if jobs_dir.is_dir() else []:
        if job_dir.name not in unfinished:
            shutil.rmtree(job_dir, ignore_errors=True)


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
