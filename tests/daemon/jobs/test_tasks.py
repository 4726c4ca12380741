"""A job's assembly task: a full output disk pauses the job naming the space it needs
(not the job's fault), and any other failure to write fails it, with the reason and no
traceback (tests/pipeline/test_outputs_full_disk.py fills a real disk)."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import structlog

from virnuc.daemon.jobs import tasks as job_tasks
from virnuc.daemon.progress.log import JobRow, ProgressLog
from virnuc.daemon.scheduler_messages import AssemblyFinished, OutOfSpace
from virnuc.faults import Faults

pytestmark = pytest.mark.timeout(60)


class TwoParts:
    """The progress log as assembly sees it when it asks what the outputs need."""

    async def iter_parts(self, job_id: str) -> AsyncIterator[SimpleNamespace]:
        for size in (1000, 2345):
            yield SimpleNamespace(size=size)


def assemble_failing_with(monkeypatch: pytest.MonkeyPatch, code: int) -> tuple[Any, list[Any]]:
    async def failing(*args: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(job_tasks, "assemble", failing)
    row = cast(JobRow, SimpleNamespace(job_id="j1", output="/out"))
    progress = cast(ProgressLog, TwoParts())
    with structlog.testing.capture_logs() as logs:
        finished = asyncio.run(job_tasks.assembly(progress, row, threading.Event(), Faults()))
    return finished, logs


def test_a_full_output_disk_pauses_the_job_naming_the_space_it_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not the job's fault: the scheduler is asked to wait for space, the log has one
    line with the reason and no traceback."""
    finished, logs = assemble_failing_with(monkeypatch, errno.ENOSPC)
    assert finished == OutOfSpace("j1", Path("/out"), needed=3345)
    (entry,) = [e for e in logs if e["event"] == "assembly.no_space"]
    assert "exc_info" not in entry
    assert "No space left on device" in entry["error"]


def test_an_unwritable_output_fails_the_job_with_the_reason_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    finished, logs = assemble_failing_with(monkeypatch, errno.EACCES)
    assert isinstance(finished, AssemblyFinished)
    assert finished.error == "writing the outputs to /out failed: [Errno 13] Permission denied"
    (entry,) = [e for e in logs if e["event"] == "assembly.failed"]
    assert "exc_info" not in entry
    assert entry["error"] == finished.error
