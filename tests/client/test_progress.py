"""The progress line `virnucctl` draws while it waits."""

from __future__ import annotations

import sys

import pytest

from virnuc.client.progress import ProgressLine

pytestmark = pytest.mark.timeout(30)


def test_progress_line_without_a_tty_prints_plain_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bar = ProgressLine(sys.stderr)
    bar.update(0, 0, 0, state="queued")
    bar.update(5, 10, 30)  # within 10 s of the last line: skipped
    bar.update(10, 10, 60, state="done", force=True)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert "records 0/?" in lines[0]
    assert "queued" in lines[0]
    assert "100.0%" in lines[1]
    assert "records 10/10  frames 60" in lines[1]
