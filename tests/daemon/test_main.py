"""virnucd's and virnucctl's entry points: they import no model library (torch and its
kin are the workers'), and each says its version.

Importing torch costs virnucd about a second at start and a few hundred MB it never
uses; h5py and matplotlib are imported only when a job writes embeddings or a report.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from virnuc import __version__

MODEL_LIBRARIES = ("torch", "transformers", "esm", "h5py", "matplotlib")


@pytest.mark.parametrize("entry", ["virnuc.daemon.main", "virnuc.client.cli"])
def test_importing_the_entry_point_imports_no_model_library(entry: str) -> None:
    probe = f"import sys, {entry}; print(*[m for m in {MODEL_LIBRARIES!r} if m in sys.modules])"
    imported = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.split()
    assert imported == []


@pytest.mark.parametrize(
    ("entry", "name"), [("virnuc.daemon.main", "virnucd"), ("virnuc.client.cli", "virnucctl")]
)
def test_version_prints_the_package_version_and_exits_0(entry: str, name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", entry, "--version"], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{name} {__version__}\n", "")
