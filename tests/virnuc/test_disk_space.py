"""virnuc/disk_space.py: a full disk told apart from other failures, and how full."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from virnuc.disk_space import describe, free_bytes, human, is_no_space


def _raised_from(cause: BaseException) -> RuntimeError:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise RuntimeError("writing a part failed") from inner
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_or_quota_is_no_space_even_when_wrapped(code: int) -> None:
    full = OSError(code, "full")
    assert is_no_space(full)
    assert is_no_space(_raised_from(full))


def test_sqlites_disk_full_is_no_space_and_other_errors_are_not() -> None:
    sqlite_full = sqlite3.OperationalError("database or disk is full")
    sqlite_full.sqlite_errorcode = 13  # type: ignore[attr-defined]
    assert is_no_space(sqlite_full)
    assert not is_no_space(sqlite3.OperationalError("database is locked"))
    assert not is_no_space(OSError(errno.EACCES, "denied"))
    assert not is_no_space(_raised_from(ValueError("bad input")))


def test_free_space_is_asked_of_the_nearest_existing_ancestor(tmp_path: Path) -> None:
    free = free_bytes(tmp_path / "not" / "yet" / "made")
    assert free is not None
    assert free > 0


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (999, "999 B"),
        (1000, "1.0 kB"),
        (1234567, "1.2 MB"),
        (5 * 10**9, "5.0 GB"),
        (7 * 10**12, "7.0 TB"),
    ],
)
def test_sizes_read_in_decimal_units(size: int, text: str) -> None:
    assert human(size) == text


def test_describe_says_where_what_is_free_and_what_is_needed(tmp_path: Path) -> None:
    text = describe(tmp_path, 3_400_000)
    assert text.startswith(f"no space on {tmp_path}: ")
    assert " free, about 3.4 MB needed" in text
    assert describe(tmp_path, None).endswith(" free")
