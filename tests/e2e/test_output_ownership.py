"""Files in --out that virnucd did not write, end to end: never replaced without force.

Submit checks that --out holds no results; these files appear after that, while the
job runs. Without force the job fails naming the file and what to do, and publishes
nothing; with force it replaces them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virnuc.pipeline.output_format import RUN_INFO
from virnuc.pipeline.outputs import EMBEDDINGS, OUTPUT_NAMES, PREDICTIONS, PREDICTIONS_HEADER
from virnuc.pipeline.report import PLOT, REPORT

from bench.synthetic import random_lengths, write_fasta
from tests.support.harness import Daemon, running_daemon
from tests.support.poll import wait_for

THEIRS = "someone else's results\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, demo_cache: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("ownership") / "state", demo_cache) as daemon:
        yield daemon


def run_with_a_file_appearing(daemon: Daemon, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """Submit into an empty --out, write their file there at once, wait for the end."""
    fasta = tmp_path / "in.fa"
    write_fasta(fasta, random_lengths(30, seed=3, low=200, high=900), seed=3)
    out = tmp_path / "out"
    job = daemon.client.result(
        "submit", input=str(fasta), output=str(out), profile="demo", **extra
    )["job_id"]
    out.mkdir(exist_ok=True)
    (out / PREDICTIONS).write_text(THEIRS)  # long before the job's parts are assembled
    return daemon.client.wait_state(job, ("done", "failed", "killed"))


def test_a_file_that_appeared_in_out_fails_the_job_and_is_kept(
    daemon: Daemon, tmp_path: Path
) -> None:
    status = run_with_a_file_appearing(daemon, tmp_path)
    out = tmp_path / "out"
    assert status["state"] == "failed", status
    for part in (str(out), PREDICTIONS, "did not write", "move it away", "--force"):
        assert part in status["error"], status["error"]
    assert (out / PREDICTIONS).read_text() == THEIRS
    assert sorted(p.name for p in out.iterdir()) == [PREDICTIONS]  # nothing of ours, no .partial
    assert daemon.client.call("ping")["ok"]


def test_with_force_a_file_that_appeared_in_out_is_replaced(daemon: Daemon, tmp_path: Path) -> None:
    status = run_with_a_file_appearing(daemon, tmp_path, force=True)
    out = tmp_path / "out"
    assert status["state"] == "done", status
    assert (out / PREDICTIONS).read_text().startswith(PREDICTIONS_HEADER)
    wait_for((out / REPORT).exists, 60, "the report, made after `done`, last")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted({*OUTPUT_NAMES, RUN_INFO, PLOT, REPORT} - {EMBEDDINGS})
