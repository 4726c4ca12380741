"""daemon/jobs/input_check.py: are a job's inputs still the files they were planned
from? (Planning and the scheduler use it: tests/daemon/jobs/test_planner.py and
test_scheduler.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from virnuc.daemon.jobs.input_check import (
    InputChanged,
    check_unchanged,
    fingerprint,
    fingerprint_if_readable,
)


def inputs(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "a.fa", tmp_path / "b.fa"]
    for path in paths:
        path.write_bytes(b">r\nACGT\n")
    return paths


def test_unchanged_inputs_pass_and_an_unknown_fingerprint_is_not_checked(tmp_path: Path) -> None:
    paths = inputs(tmp_path)
    recorded = fingerprint(paths)
    assert recorded.count(";") == 1  # one entry per input, in order
    check_unchanged(paths, recorded)
    check_unchanged([tmp_path / "gone.fa"], None)


def test_a_missing_input_has_no_fingerprint(tmp_path: Path) -> None:
    assert fingerprint_if_readable([*inputs(tmp_path), tmp_path / "gone.fa"]) is None


def test_a_changed_input_is_named_with_how_it_changed(tmp_path: Path) -> None:
    paths = inputs(tmp_path)
    recorded = fingerprint(paths)

    paths[1].write_bytes(b">r\nACGTACGT\n")
    with pytest.raises(InputChanged, match=f"{paths[1]}: its size went from 8 to 12 bytes"):
        check_unchanged(paths, recorded)

    recorded = fingerprint(paths)
    stat = paths[0].stat()
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(InputChanged, match=f"{paths[0]}: it was modified"):
        check_unchanged(paths, recorded)

    recorded = fingerprint(paths)
    replacement = tmp_path / "new.fa"
    replacement.write_bytes(paths[0].read_bytes())
    os.replace(replacement, paths[0])
    with pytest.raises(InputChanged, match=f"{paths[0]}: it was replaced by another file"):
        check_unchanged(paths, recorded)

    recorded = fingerprint(paths)
    paths[0].unlink()
    with pytest.raises(InputChanged, match=f"{paths[0]}: No such file"):
        check_unchanged(paths, recorded)
    with pytest.raises(InputChanged, match="2 input\\(s\\) were planned, 1 given"):
        check_unchanged(paths[1:], recorded)
