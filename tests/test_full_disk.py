"""A full output disk: writing fails with ENOSPC, and nothing is left to keep it full.

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
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO, cast

import pytest
import structlog

from virnuc.daemon import job_tasks
from virnuc.daemon.progress_log import JobRow, ProgressLog
from virnuc.faults import Faults

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
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs root to mount a 1 MiB tmpfs (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(disk)],
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
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True, timeout=10)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill(disk: Path) -> None:
    """Leave no free block: write a filler until ENOSPC."""

    def write_forever(filler: BinaryIO) -> None:
        while True:
            filler.write(bytes(4096))

    with (
        (disk / "filler").open("wb", buffering=0) as filler,
        pytest.raises(OSError, match="No space left on device"),
    ):
        write_forever(filler)


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


def test_a_full_disk_fails_the_job_with_the_reason_and_logs_no_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An expected failure: one log line with the reason, not a traceback on stdout."""

    async def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(job_tasks, "assemble", full)
    row = cast(JobRow, SimpleNamespace(job_id="j1", output="/out"))
    progress = cast(ProgressLog, None)
    with structlog.testing.capture_logs() as logs:
        finished = asyncio.run(job_tasks.assembly(progress, row, threading.Event(), Faults()))
    assert finished is not None
    assert (
        finished.error == "writing the outputs to /out failed: [Errno 28] No space left on device"
    )
    (entry,) = [e for e in logs if e["event"] == "assembly.failed"]
    assert "exc_info" not in entry
    assert entry["error"] == finished.error
