"""A full disk pauses a job instead of failing it (issue 11, items 4 and 5): it keeps
its verified parts, shows `waiting` with the reason in `status`, tries again with
backoff and finishes, with the outputs of an uninterrupted run, once space is freed.

The disks are real: small tmpfs mounts filled to the last block (root only; CI runs
as root, elsewhere these tests are skipped with the reason).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from virnuc.pipeline.run import predict_file

from bench.synthetic import random_lengths, write_fasta
from tests.support.disks import fill, tmpfs
from tests.support.harness import Daemon, assert_same_outputs
from tests.support.poll import wait_for

pytestmark = pytest.mark.timeout(240)

MiB = 1 << 20
SETTINGS = (
    "restart_backoff_max = 0.5\nstop_grace = 20\nblock_frames = 64\n"
    "space_retry = 0.2\nspace_retry_max = 0.5\n"
)


def config(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "virnucd.toml"
    path.write_text(SETTINGS + extra)
    return str(path)


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("no-space-in") / "records.fa"
    write_fasta(path, random_lengths(200, seed=23), seed=23)
    return path


@pytest.fixture(scope="module")
def reference(demo_models, records: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("no-space-ref")
    predict_file(demo_models, records, out)
    return out


def submit(daemon: Daemon, fasta: Path, out: Path, **extra: Any) -> dict[str, Any]:
    return daemon.client.call("submit", input=str(fasta), output=str(out), profile="demo", **extra)


def waiting(daemon: Daemon, job: str) -> dict[str, Any] | None:
    status = daemon.client.result("status", job_id=job)
    assert status["state"] not in ("failed", "done"), status
    return status if "waiting" in status else None


def parts_on_disk(state: Path, job: str) -> list[Path]:
    return sorted((state / "jobs" / job / "parts").glob("*.npz"))


def test_a_full_output_disk_pauses_assembly_until_space_is_freed(
    tmp_path: Path, demo_cache: Path, records: Path, reference: Path
) -> None:
    state = tmp_path / "state"
    with tmpfs(tmp_path / "outdisk", 1 * MiB) as disk:
        filler = fill(disk)
        daemon = Daemon(state, demo_cache, "--config", config(tmp_path))
        try:
            daemon.start()
            job = submit(daemon, records, disk / "out")["result"]["job_id"]
            status = wait_for(lambda: waiting(daemon, job), 120, "the job to wait for space")
            assert status["state"] == "assembling", status
            assert status["waiting"].startswith(f"no space on {disk / 'out'}: "), status
            assert "needed" in status["waiting"]
            assert parts_on_disk(state, job), "the verified parts were dropped"
            assert not list((disk / "out").glob("*")), "a partial output was left"
            assert daemon.client.result("status", job_id=job)["state"] == "assembling"

            filler.unlink()
            status = daemon.client.wait_state(job, ("done", "failed"))
            assert status["state"] == "done", status
            assert "waiting" not in status
            assert status["restarts"] == 0
            assert status["records_recomputed"] == 0
            assert_same_outputs(reference, disk / "out")
            assert daemon.stop() == 0
        finally:
            daemon.close()
        events = [e["event"] for e in daemon.log_events()]
        assert "job.waiting_for_space" in events
        assert "job.space_freed" in events


def test_a_full_state_disk_refuses_submits_then_pauses_units_until_space_is_freed(
    tmp_path: Path, demo_cache: Path, records: Path, reference: Path
) -> None:
    """The proactive path (below `state_min_free_mb` nothing is handed out) and the
    real one (a worker's part write and SQLite hit ENOSPC) on one disk."""
    with tmpfs(tmp_path / "state", 24 * MiB, mode=0o700) as state:
        daemon = Daemon(state, demo_cache, "--config", config(tmp_path, "state_min_free_mb = 1\n"))
        try:
            daemon.start()
            filler = fill(state)
            refused = submit(daemon, records, tmp_path / "out")
            assert not refused["ok"]
            assert refused["error"]["code"] == "no_space", refused
            assert f"no space on {state}" in refused["error"]["message"]
            filler.unlink()

            job = submit(daemon, records, tmp_path / "out", checkpoint_every=4)["result"]["job_id"]
            wait_for(lambda: parts_on_disk(state, job), 120, "a first recorded part")
            filler = fill(state)  # mid-job: whatever writes next finds the disk full
            status = wait_for(lambda: waiting(daemon, job), 120, "the job to wait for space")
            assert status["waiting"].startswith(f"no space on {state}"), status
            kept = parts_on_disk(state, job)
            assert kept, "the verified parts were dropped"
            assert daemon.client.call("ping")["ok"]  # virnucd keeps serving

            filler.unlink()
            status = daemon.client.wait_state(job, ("done", "failed"))
            assert status["state"] == "done", status
            assert status["restarts"] == 0, status  # a full disk is nobody's death
            assert_same_outputs(reference, tmp_path / "out")
            assert daemon.stop() == 0
        finally:
            daemon.close()
