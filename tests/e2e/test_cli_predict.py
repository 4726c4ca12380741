"""`virnucctl predict` as a user runs it: a private virnucd with its workers, the demo
profile, outputs written, and a second run into the same folder refused without --force
and done with it (as `make demo` runs it)."""

from __future__ import annotations

import json
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


def test_cli_predict_takes_the_model_sets_of_a_config(demo_cache: Path, tmp_path: Path) -> None:
    """`--config` brings its `[models.NAME]` sets (only those: its state dir is not the
    private virnucd's); `[models.default]` serves a predict that names no model."""
    config = tmp_path / "virnucd.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "elsewhere"}"\n[models.default]\nprofile = "demo"\n'
        '[models.quick]\nprofile = "demo"\nprecision = "bf16"\n'
    )
    env = {**os.environ, "VIRNUC_CACHE_DIR": str(demo_cache)}
    cmd = [sys.executable, "-m", "virnuc.client.cli", "predict", str(EXAMPLE), "--json"]
    cmd += ["--config", str(config)]
    for models, out in (([], tmp_path / "default"), (["--models", "quick"], tmp_path / "quick")):
        run = subprocess.run(
            [*cmd, *models, "--out", str(out)], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        final = json.loads(run.stdout)
        assert final["model_set"] == (models[1] if models else "default")
        assert (out / PREDICTIONS).exists()
    assert final["precision"] == "bf16"
    assert not (tmp_path / "elsewhere").exists()
