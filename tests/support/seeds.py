"""The random seeds of the tests: each test's own, fixed, so every run is the same run;
`VIRNUC_TEST_SEED=N` replaces them all with N, to explore or to rerun a failure.

A test asks `seed(default)` for each seed it uses; the seeds a failed test used are
printed under its failure (tests/conftest.py), with the line that reruns it.
"""

from __future__ import annotations

import os

ENV = "VIRNUC_TEST_SEED"

_used: dict[str, list[int]] = {}


def override() -> int | None:
    """The seed `VIRNUC_TEST_SEED` sets for every test, or None."""
    value = os.environ.get(ENV, "").strip()
    return int(value) if value else None


def seed(default: int) -> int:
    """The seed to use where the test's own is `default`; noted for the failure report."""
    chosen = override()
    value = default if chosen is None else chosen
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    _used.setdefault(test, []).append(value)
    return value


def used_by(nodeid: str) -> list[int]:
    """The seeds the test `nodeid` asked for (its fixtures included), in order."""
    return _used.get(nodeid, [])
