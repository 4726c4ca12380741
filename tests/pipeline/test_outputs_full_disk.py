"""The output writer on a full disk: writing fails with ENOSPC and nothing is left to
keep the disk full.

The disk is real: a 1 MiB tmpfs mounted for the test, which needs root (CI runs as
root); elsewhere the tests are skipped with the reason. The writer runs in a child
process, so what a failed close would print (h5py's "Exception ignored" tracebacks)
and how the process ends (a crash while freeing HDF5 objects) are seen as well.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virnuc.disk_space import free_bytes

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
