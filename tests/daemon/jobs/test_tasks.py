"""A full output disk: writing fails with ENOSPC, nothing is left to keep it full, and
the job is paused rather than failed.

The disk is real: a 1 MiB tmpfs mounted for the test, which needs root (CI runs as
root); elsewhere the tests are skipped with the reason. The writer runs in a child
process, so what a failed close would print (h5py's "Exception ignored" tracebacks)
and how the process ends (a crash while freeing HDF5 objects) are seen as well.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import structlog

from virnuc.daemon.jobs import tasks as job_tasks
from virnuc.daemon.progress.log import JobRow, ProgressLog
from virnuc.daemon.scheduler_messages import AssemblyFinished, OutOfSpace
from virnuc.disk_space import free_bytes
from virnuc.faults import Faults

from tests.support.disks import fill, tmpfs

pytestmark = pytest.mark.timeout(60)

DISK_BYTES = 1 << 20

#: Writes records into argv[1] until the disk is full ("write": text and HDF5 files
#: fill it) or onto a disk already full ("commit": everything is still in the buffers,
#: so the flush in commit() fails, and the one in closing would fail again).
CHILD = r"""
import gc, json, sys
import numpy as np
from virnuc.pipeline.outputs import RecordResult, ResultWriter

out, case = sys.argv[1], sys.argv[2]
n, dims = 64, (64, 64)
record = RecordResult(
    "r", 600, 2, [f"r_chunk_{i}F1" for i in range(n)],
    np.full((n, 2), 0.5, np.float32), np.ones((n, dims[0]), np.float32),
    np.ones((n, dims[1]), np.float32),
)
try:
    if case == "write":
        with ResultWriter(out, embedding_dims=dims) as writer:
            for _ in range(1000):
                writer.write(record)
            writer.commit()
    else:
        with ResultWriter(out) as writer:
            writer.write(record)
            writer.commit()
except OSError as exc:
    failure = {"errno": exc.errno, "message": str(exc)}
else:
    sys.exit("the disk never filled")
del writer
gc.collect()  # HDF5 objects left open by a failed close are freed here
print(json.dumps(failure))
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", DISK_BYTES) as disk:
        yield disk


def write_on(disk: Path, case: str) -> dict[str, Any]:
    out = disk / "out"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), case],
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stderr == ""  # no "Exception ignored ... OSError" from h5py, no traceback
    failure: dict[str, Any] = json.loads(child.stdout)
    assert failure["errno"] == errno.ENOSPC, failure
    assert sorted(p.name for p in out.iterdir()) == []  # no .partial file, no final file
    return failure


def test_a_disk_filled_by_the_outputs_is_freed_again(small_disk: Path) -> None:
    write_on(small_disk, "write")
    assert free_bytes(small_disk) > DISK_BYTES * 0.9


def test_a_failed_flush_at_commit_still_removes_every_partial_file(small_disk: Path) -> None:
    """The flush fails in commit(); closing the files flushes (and fails) again."""
    fill(small_disk)
    write_on(small_disk, "commit")


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
