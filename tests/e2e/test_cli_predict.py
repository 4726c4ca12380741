"""`virnucctl predict` as a user runs it: a private virnucd with its workers, the demo
profile, outputs written, and a second run into the same folder refused without --force
and done with it (as `make demo` runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from virnuc.pipeline.outputs import PREDICTIONS

EXAMPLE = Path(__file__).parents[2] / "examples" / "example.fasta"


def test_cli_predict_with_the_demo_profile(demo_cache: Path, tmp_path: Path) -> None:
    env = {**os.environ, "VIRNUC_CACHE_DIR": str(demo_cache)}
    cmd = [sys.executable, "-m", "virnuc.client.cli", "predict", str(EXAMPLE), "--profile", "demo"]
    run = subprocess.run([*cmd, "--out", str(tmp_path)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "meaningless" in run.stderr
    assert str(tmp_path) in run.stdout
    assert (tmp_path / PREDICTIONS).exists()
    again = subprocess.run([*cmd, "--out", str(tmp_path)], env=env, capture_output=True, text=True)
    assert again.returncode == 4
    assert "--force" in again.stderr
    forced = subprocess.run(
        [*cmd, "--out", str(tmp_path), "--force"], env=env, capture_output=True, text=True
    )
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / PREDICTIONS).exists()
