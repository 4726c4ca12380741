"""The Makefile and pyproject.toml agree with each other and with what CI runs: the
Python versions taken, the torch range, the licence files, and a re-runnable demo."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).parents[1]
MAKEFILE = (ROOT / "Makefile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAKE = shutil.which("make")
needs_make = pytest.mark.skipif(MAKE is None, reason="no make here")


def make_variable(name: str) -> str:
    found = re.search(rf"^{name}\s*[?:]?=\s*(\S+)", MAKEFILE, re.MULTILINE)
    assert found, f"the Makefile sets no {name}"
    return found.group(1)


def requirement(name: str) -> Requirement:
    return next(r for r in map(Requirement, PYPROJECT["project"]["dependencies"]) if r.name == name)


def test_the_makefile_takes_the_pythons_pyproject_allows() -> None:
    assert PYPROJECT["project"]["requires-python"] == f">={make_variable('PYTHON_MIN')}"


@needs_make
def test_without_a_python_new_enough_make_says_which_it_needs(tmp_path: Path) -> None:
    """No python3.x on PATH at all: the message names the versions and the way out."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    assert MAKE is not None
    done = subprocess.run(
        [MAKE, "venv"],
        cwd=tmp_path,
        env={"PATH": str(tmp_path / "no-such-dir")},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode != 0
    assert "virnuc needs Python 3.11 or newer" in done.stderr
    assert "make PYTHON=/path/to/python3.x" in done.stderr
    assert not (tmp_path / ".venv").exists()


def test_the_torch_range_holds_what_ci_installs_and_no_later_minor() -> None:
    ci_torch = Version(make_variable("TORCH_SPEC").removeprefix("torch=="))
    allowed = requirement("torch").specifier
    assert ci_torch in allowed
    assert Version(f"{ci_torch.major}.{ci_torch.minor + 1}") not in allowed


@needs_make
def test_make_demo_replaces_the_previous_demo_output() -> None:
    """The demo writes into demo-output each time; without --force the second run is
    refused (tests/e2e/test_cli_predict.py runs predict --force over a first run)."""
    assert MAKE is not None
    recipe = subprocess.run(
        [MAKE, "--no-print-directory", "-n", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    predict = next(line for line in recipe.splitlines() if "virnucctl predict" in line)
    assert "--force" in predict.split()
    assert "--profile demo" in predict


def test_the_licence_files_are_there_and_say_what_pyproject_says() -> None:
    assert PYPROJECT["project"]["license"] == "MIT AND Apache-2.0"
    for name in PYPROJECT["project"]["license-files"]:
        assert (ROOT / name).is_file(), name
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2026 the virnuc")
    vendored = (ROOT / "pipeline" / "dnabert_s_code" / "LICENSE").read_text()
    assert vendored.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "pipeline/dnabert_s_code/LICENSE" in (ROOT / "NOTICE").read_text()
