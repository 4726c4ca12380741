"""The Slurm test cluster (.ci/slurm-setup.sh) does what the Slurm backend relies on."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.poll import wait_for
from tests.support.slurm_cluster import needs_slurm, scancel_all, squeue_jobs

pytestmark = needs_slurm


@pytest.fixture
def job_name() -> Iterator[str]:
    """A unique job name; every job under it is cancelled after the test."""
    name = f"virnuc-test-{uuid.uuid4().hex[:8]}"
    yield name
    scancel_all(name)


def sbatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sbatch", "--parsable", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_array_tasks_run_at_once_each_with_a_gpu(job_name: str, tmp_path: Path) -> None:
    # Each task records what it sees, then holds its GPU until the test releases it.
    task = "$SLURM_ARRAY_TASK_ID"
    script = (
        f'echo "{task} $CUDA_VISIBLE_DEVICES" > {tmp_path}/t{task}.tmp'
        f" && mv {tmp_path}/t{task}.tmp {tmp_path}/t{task}"
        f" && for i in $(seq 300); do [ -e {tmp_path}/release ] && exit 0; sleep 0.1; done;"
        " exit 1"
    )
    done = sbatch(
        "--array=0-1", "--gres=gpu:1", "-c", "1", "-J", job_name,
        "-o", f"{tmp_path}/%A_%a.out", "--wrap", script,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    array_id = done.stdout.strip().split(";")[0]
    assert array_id.isdigit(), done.stdout

    both = {f"{array_id}_0", f"{array_id}_1"}
    wait_for(
        lambda: {j["id"] for j in squeue_jobs(job_name) if j["state"] == "RUNNING"} == both,
        20,
        "both array tasks RUNNING at once",
    )
    assert {j["node"] for j in squeue_jobs(job_name)} == {"localhost"}
    wait_for(lambda: all((tmp_path / f"t{i}").exists() for i in "01"), 20, "both tasks' files")
    (tmp_path / "release").touch()
    wait_for(lambda: not squeue_jobs(job_name), 30, "the array job to finish", interval=0.2)

    seen = {}
    for i in "01":
        got_task, gpus = (tmp_path / f"t{i}").read_text().split()
        assert got_task == i
        seen[i] = gpus
    assert sorted(seen.values()) == ["0", "1"], seen  # one distinct fake GPU each
    assert not any(p.read_text() for p in tmp_path.glob("*.out")), "tasks wrote output"


def test_down_partition_pends_with_reason(job_name: str, tmp_path: Path) -> None:
    done = sbatch("-p", "down", "-J", job_name, "-o", f"{tmp_path}/out", "--wrap", "true")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    job = wait_for(
        lambda: next((j for j in squeue_jobs(job_name) if j["reason"] == "PartitionDown"), None),
        10,
        "the job to pend with reason PartitionDown",
    )
    assert job["id"] == job_id
    assert job["state"] == "PENDING"


def test_nonexistent_partition_is_refused(job_name: str) -> None:
    done = sbatch("-p", "no-such-partition", "-J", job_name, "--wrap", "true")
    assert done.returncode != 0
    assert done.stdout == ""
    assert "Invalid partition name specified" in done.stderr, done.stderr
    assert not squeue_jobs(job_name)
