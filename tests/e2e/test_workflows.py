"""The workflow recipe a user copies from the README, run for real: Snakemake (from PyPI,
the `dev` extra) runs examples/Snakefile against a real virnucd whose only models are
its config's `[models.default]` set, on two samples; then again, forced, after
Snakemake has deleted the outputs. Without Snakemake the test is skipped, saying so,
and fails instead under CI=true, where `make venv` must have installed it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from virnuc.pipeline.output_format import HIGHEST_SCORE, PREDICTIONS, SUMMARY

from tests.support.harness import Daemon, write_as_fastq

ROOT = Path(__file__).parents[2]
SNAKEFILE = ROOT / "examples" / "Snakefile"
EXAMPLE = ROOT / "examples" / "example.fasta"
SAMPLES = {"lane1": (0, 3), "lane2": (3, 2)}  # name: (first record, records)
RUN_LIMIT = 300  # seconds a Snakemake run may take before the test gives up on it


def snakemake() -> Path:
    """The venv's snakemake, else skip (or fail under CI=true)."""
    program = Path(sys.executable).parent / "snakemake"
    if program.exists():
        return program
    reason = f"snakemake is not installed in {program.parent} (pip install -e '.[dev]')"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture
def server(tmp_path: Path, demo_cache: Path) -> Iterator[Daemon]:
    """A virnucd whose config gives it a default model set (the demo models)."""
    config = tmp_path / "virnucd.toml"
    config.write_text('[models.default]\nprofile = "demo"\n')
    daemon = Daemon(tmp_path / "state", demo_cache, "--config", str(config)).start()
    try:
        yield daemon
    finally:
        daemon.stop()
        daemon.close()


def run_snakemake(workdir: Path, state_dir: Path, *options: str) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRNUC_STATE_DIR": str(state_dir),
    }
    command = [str(snakemake()), "-j", "2", "--snakefile", str(SNAKEFILE), *options]
    run = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_LIMIT
    )
    assert run.returncode == 0, f"snakemake exited {run.returncode}:\n{run.stderr[-4000:]}"


def assert_complete(out: Path, records: int) -> None:
    """The job's outputs are all there, final (no `.partial` left), one summary row
    per record of its sample."""
    names = {path.name for path in out.iterdir()}
    assert {PREDICTIONS, HIGHEST_SCORE, SUMMARY} <= names, names
    assert not [name for name in names if name.endswith(".partial")], names
    assert len((out / SUMMARY).read_text().splitlines()) == 1 + records


def test_the_readme_snakemake_recipe_runs_twice_on_the_server_s_default_models(
    server: Daemon, tmp_path: Path
) -> None:
    snakemake()
    workdir = tmp_path / "work"
    (workdir / "reads").mkdir(parents=True)
    for name, (first, count) in SAMPLES.items():
        write_as_fastq(EXAMPLE, workdir / "reads" / f"{name}.fq.gz", first, count)

    run_snakemake(workdir, server.state_dir)
    for name, (_, count) in SAMPLES.items():
        assert_complete(workdir / "virnuc" / name, count)

    # A rerun: Snakemake deletes the outputs it will remake, and the jobs run again.
    run_snakemake(workdir, server.state_dir, "--forcerun", "virnuc")
    for name, (_, count) in SAMPLES.items():
        assert_complete(workdir / "virnuc" / name, count)
    jobs = server.client.result("list")["jobs"]
    assert [(job["state"], job.get("model_set")) for job in jobs] == [("done", "default")] * 4


def test_the_readme_shows_the_snakefile_that_is_tested() -> None:
    """README's Snakemake block, the first Python block after README names
    examples/Snakefile, is that file: the recipe a user copies is the one run above."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"examples/Snakefile.*?\n```python\n(.*?)```", readme, re.S)
    assert block is not None, "README does not show examples/Snakefile"
    assert block.group(1) == SNAKEFILE.read_text()
