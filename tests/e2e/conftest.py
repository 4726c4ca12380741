"""Every test in this folder is end to end: it starts the real virnucd or worker
subprocesses. It is marked `e2e` here, so `make test-fast` (`-m "not e2e"`) leaves it out
and no test marks itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.slurm_cluster import require_slurm

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A Slurm that runs jobs, for the tests marked `needs_slurm`: else skipped, or
    failed where VIRNUC_REQUIRE_SLURM=1 (tests/support/slurm_cluster.py)."""
    require_slurm()
