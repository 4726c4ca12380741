"""A done job's report drawn in a child at nice 19, through the directory the daemon
opened again (tests/daemon/jobs/test_tasks_report.py runs it through `_report`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from virnuc.daemon.jobs.report_process import ReportFailed, _descriptor_in, write_report
from virnuc.pipeline.outputs import RecordResult, ResultWriter
from virnuc.pipeline.report import REPORT_NAMES


def outputs(out: Path) -> Path:
    scores = np.array([[0.2, 0.8]], dtype=np.float32)
    with ResultWriter(out) as writer:
        writer.write(RecordResult("a", 300, 1, ["a_chunk_1F1"], scores))
        writer.write(RecordResult("b", 150, 1, [], np.zeros((0, 2), np.float32)))
        writer.commit()
    return out


def test_the_report_is_written_through_the_opened_directory(tmp_path: Path) -> None:
    out = outputs(tmp_path / "out")
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_report(Path(f"/proc/self/fd/{fd}"), run_info={"chunk_length": 300}, shown_as=out)
    finally:
        os.close(fd)
    for name in REPORT_NAMES:
        assert (out / name).stat().st_size > 0
    page = (out / "report.html").read_text()
    assert str(out) in page
    assert "/proc/self/fd" not in page


def test_a_report_that_cannot_be_drawn_says_why_naming_the_users_directory(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    fd = os.open(empty, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(ReportFailed, match=r"^ReportError: .*holds no complete outputs") as got:
            write_report(Path(f"/proc/self/fd/{fd}"), run_info={}, shown_as=empty)
    finally:
        os.close(fd)
    assert str(empty) in str(got.value)
    assert "/proc/self/fd" not in str(got.value)


def test_only_a_descriptor_path_passes_a_descriptor() -> None:
    assert _descriptor_in("/proc/self/fd/7") == (7,)
    assert _descriptor_in("/home/someone/out") == ()
