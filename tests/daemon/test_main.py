"""virnucd and virnucctl import no model library: torch and its kin are the workers'.

Importing torch costs virnucd about a second at start and a few hundred MB it never
uses; h5py and matplotlib are imported only when a job writes embeddings or a report.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

MODEL_LIBRARIES = ("torch", "transformers", "esm", "h5py", "matplotlib")


@pytest.mark.parametrize("entry", ["virnuc.daemon.main", "virnuc.client.cli"])
def test_importing_the_entry_point_imports_no_model_library(entry: str) -> None:
    probe = f"import sys, {entry}; print(*[m for m in {MODEL_LIBRARIES!r} if m in sys.modules])"
    imported = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.split()
    assert imported == []
