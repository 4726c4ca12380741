"""The Slurm backend end to end: the real virnucd submitting real pilots to a real
single-node slurmctld/slurmd (`.ci/slurm-setup.sh`), over tcp:// with CURVE.

Each test checks an output against the in-process pipeline, or Slurm's own view
(squeue) of what virnucd left behind. Pilots run on this machine, so the state dir
doubles as the "shared filesystem".
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from virnuc.daemon.slots.slurm import PILOT_JOB_NAME
from virnuc.pipeline.run import predict_file

from bench.synthetic import random_lengths, write_fasta
from tests.support.harness import Daemon, RawClient, assert_same_outputs, free_port
from tests.support.poll import wait_for
from tests.support.slurm_cluster import needs_slurm, squeue_jobs

pytestmark = needs_slurm

PILOT = PILOT_JOB_NAME
EXAMPLE = Path(__file__).parents[2] / "examples" / "example.fasta"


def slurm_daemon(root: Path, demo_cache: Path, **settings: object) -> Daemon:
    """virnucd with backend = slurm and settings fit for a 2-core test machine."""
    config = {
        "backend": "slurm",
        "worker_endpoint": f"tcp://127.0.0.1:{free_port()}",
        "slurm_max_workers": 2,
        "slurm_cpus": 1,
        "slurm_poll_interval": 0.3,
        "idle_exit": 30.0,
        "hello_timeout": 90.0,
        "heartbeat_timeout": 20.0,
        "checkpoint_every": 4,
        "unit_records": 30,
        "stop_grace": 20.0,
        **settings,
    }
    lines = [f"{key} = {value!r}".replace("'", '"') for key, value in config.items()]
    (root / "virnucd.toml").write_text("\n".join(lines) + "\n")
    return Daemon(root / "state", demo_cache, "--config", str(root / "virnucd.toml")).start()


def pilots_of(daemon: Daemon) -> list[dict[str, str]]:
    """The pilots squeue still shows of the arrays `daemon` submitted."""
    arrays = {e["array"] for e in daemon.log_events() if e.get("event") == "slurm.submitted"}
    return [job for job in squeue_jobs(PILOT) if job["id"].split("_")[0] in arrays]


def stopped_leaving_no_pilot(daemon: Daemon) -> None:
    """virnucd stops with exit 0, and nothing of it is left in Slurm's queue."""
    assert daemon.stop() == 0, daemon.log_tail()
    assert not pilots_of(daemon), f"pilots outlived virnucd: {pilots_of(daemon)}"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, demo_cache: Path) -> Iterator[Daemon]:
    daemon = slurm_daemon(tmp_path_factory.mktemp("slurmd"), demo_cache)
    try:
        yield daemon
        stopped_leaving_no_pilot(daemon)
    finally:
        daemon.close()


@pytest.fixture(scope="module")
def long_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "long.fa"
    write_fasta(path, random_lengths(900, seed=5), seed=5)
    return path


@pytest.fixture(scope="module")
def long_reference(demo_models, long_input: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "out"
    predict_file(demo_models, long_input, out)
    return out


def submit(client: RawClient, fasta: Path, out: Path) -> str:
    return str(client.result("submit", input=str(fasta), output=str(out), profile="demo")["job_id"])


def busy_pilot(client: RawClient, job_id: str) -> dict[str, str]:
    """A pilot computing a unit of `job_id`."""

    def probe() -> dict[str, str] | None:
        status = client.result("status", job_id=job_id)
        assert status["state"] not in ("failed", "killed"), status
        workers = client.result("workers")["workers"]
        busy = [w for w in workers if w.get("job_id") == job_id and w.get("slurm_job_id")]
        return busy[0] if busy else None

    return wait_for(probe, 120, "a pilot busy with the job", interval=0.1)


def scancel(pilot: dict[str, str], *options: str) -> None:
    subprocess.run(["scancel", *options, pilot["slurm_job_id"]], check=True)


@pytest.fixture(scope="module")
def one_pilot(tmp_path_factory: pytest.TempPathFactory, demo_cache: Path) -> Iterator[Daemon]:
    """One pilot, small blocks and no checkpoint inside a unit: the job's progress is
    that pilot's, and whatever it computed of a unit is lost unless it gets to write
    an emergency part."""
    daemon = slurm_daemon(
        tmp_path_factory.mktemp("one-pilot"),
        demo_cache,
        slurm_max_workers=1,
        block_frames=16,
        checkpoint_every=1000,
        unit_records=300,
    )
    try:
        yield daemon
        stopped_leaving_no_pilot(daemon)
    finally:
        daemon.close()


def one_pilot_endpoint(daemon: Daemon) -> str:
    """The worker endpoint on its pilots' command lines (one port per test daemon)."""
    config = (daemon.state_dir.parent / "virnucd.toml").read_text()
    return config.split('worker_endpoint = "')[1].split('"')[0]


def frozen_mid_unit(daemon: Daemon, job_id: str) -> tuple[dict[str, str], int]:
    """SIGSTOP the pilot inside its first unit (of 225 records: 900 records in four
    units for one worker); (the pilot, the records it had reported computed)."""
    client = daemon.client
    pilot = busy_pilot(client, job_id)

    def inside_unit_0() -> int | None:
        done = client.result("status", job_id=job_id)["records_done"]
        return done if 20 <= done <= 150 else None

    wait_for(inside_unit_0, 120, "records computed inside unit 0", interval=0.05)
    scancel(pilot, "--signal=STOP", "--batch")
    held = [w.get("unit") for w in client.result("workers")["workers"]]
    assert held == [0], f"unit 0 ended before the pilot stopped: {held}"
    return pilot, client.result("status", job_id=job_id)["records_done"]


def assigned_starts(daemon: Daemon, job_id: str, unit: int) -> list[int]:
    return [
        e["start_record"]
        for e in daemon.log_events()
        if e.get("event") == "unit.assigned" and e.get("job_id") == job_id and e["unit"] == unit
    ]


def test_a_job_through_two_pilots_equals_the_local_pipeline(daemon, demo_models, tmp_path) -> None:
    job_id = submit(daemon.client, EXAMPLE, tmp_path / "out")
    status = daemon.client.wait_state(job_id, ("done", "failed"), timeout=180)
    assert status["state"] == "done", status
    reference = tmp_path / "ref"
    predict_file(demo_models, EXAMPLE, reference)
    assert_same_outputs(reference, tmp_path / "out")
    workers = daemon.client.result("workers")["workers"]
    assert [w["backend"] for w in workers] == ["slurm", "slurm"]
    # Each pilot that computed a unit loaded its models exactly once; one that came up
    # after the last unit was taken (a slow start on a busy machine) loaded none.
    computed = {e["worker"] for e in daemon.log_events() if e.get("event") == "unit.assigned"}
    assert computed, daemon.log_tail()
    loads = {w["id"]: w["model_loads"] for w in workers}
    assert loads == {slot: int(slot in computed) for slot in loads}, (loads, computed)
    assert all("_" in w["slurm_job_id"] and w["node"] == "localhost" for w in workers)


def test_a_pilot_killed_mid_unit_resumes_exactly_once(
    one_pilot, long_input, long_reference, tmp_path
) -> None:
    job_id = submit(one_pilot.client, long_input, tmp_path / "out")
    frozen_mid_unit(one_pilot, job_id)
    # SIGKILL on its node (the OOM killer, a node crash): no chance to write anything.
    subprocess.run(["pkill", "-KILL", "-f", one_pilot_endpoint(one_pilot)], check=True)
    status = one_pilot.client.wait_state(job_id, ("done", "failed"), timeout=240)
    assert status["state"] == "done", status
    assert status["restarts"] == 1, status
    assert status["records_recomputed"] > 0, status  # it died mid-unit
    assert assigned_starts(one_pilot, job_id, 0) == [0, 0]  # no part: from the start
    assert_same_outputs(long_reference, tmp_path / "out")


def test_a_scancelled_pilot_writes_its_emergency_part_and_its_unit_resumes(
    one_pilot, long_input, long_reference, tmp_path
) -> None:
    job_id = submit(one_pilot.client, long_input, tmp_path / "out")
    pilot, computed = frozen_mid_unit(one_pilot, job_id)
    # SIGTERM to the pilot itself, as Slurm's --signal=B:TERM@ before the time limit
    # (plain scancel and preemption send it too, with SIGKILL after KillWait).
    scancel(pilot, "--signal=TERM", "--batch")
    scancel(pilot, "--signal=CONT", "--batch")
    status = one_pilot.client.wait_state(job_id, ("done", "failed"), timeout=240)
    assert status["state"] == "done", status
    # Nothing computed was lost, and the pilot's leaving counted against no unit.
    assert (status["records_recomputed"], status["restarts"]) == (0, 0), status
    assert_same_outputs(long_reference, tmp_path / "out")
    # The next pilot resumed the unit where the emergency part ended.
    first, resumed = assigned_starts(one_pilot, job_id, 0)
    assert first == 0
    assert computed <= resumed < 225, (resumed, computed)


def test_a_plain_scancel_of_a_busy_pilot_resumes_its_unit_exactly_once(
    one_pilot, long_input, long_reference, tmp_path
) -> None:
    """What a user or an admin does: `scancel JOBID` of a pilot that computes. Slurm
    sends SIGTERM (the emergency part) and SIGKILL after KillWait; either way the
    unit resumes on the slot's next pilot and the outputs equal an uninterrupted run."""
    job_id = submit(one_pilot.client, long_input, tmp_path / "out")
    pilot = busy_pilot(one_pilot.client, job_id)
    wait_for(
        lambda: one_pilot.client.result("status", job_id=job_id)["records_done"] >= 20,
        120,
        "records computed",
        interval=0.05,
    )
    scancel(pilot)
    status = one_pilot.client.wait_state(job_id, ("done", "failed"), timeout=240)
    assert status["state"] == "done", status
    assert status["restarts"] <= 1, status  # 0 if its emergency part beat KillWait
    assert_same_outputs(long_reference, tmp_path / "out")
    # the unit it held was handed out again, to the slot's next pilot
    units = [
        e["unit"]
        for e in one_pilot.log_events()
        if e.get("event") == "unit.assigned" and e.get("job_id") == job_id
    ]
    assert len(units) > len(set(units)), units


def test_a_killed_job_leaves_no_pilot_once_idle(daemon, long_input, tmp_path) -> None:
    job_id = submit(daemon.client, long_input, tmp_path / "out")
    busy_pilot(daemon.client, job_id)
    daemon.client.result("kill", job_id=job_id)

    # Pilots free their GPUs after idle_exit (30 s here) without a unit.
    def all_vacant() -> bool:
        return {w["state"] for w in daemon.client.result("workers")["workers"]} == {"vacant"}

    wait_for(all_vacant, 90, "the idle pilots to exit", interval=0.5)
    assert not pilots_of(daemon)


def test_shutdown_with_pilots_busy_leaves_none_in_slurm(daemon, long_input, tmp_path) -> None:
    """The last test of the module's daemon: it stops it."""
    job_id = submit(daemon.client, long_input, tmp_path / "out")
    busy_pilot(daemon.client, job_id)
    stopped_leaving_no_pilot(daemon)


def test_pilots_of_a_crashed_virnucd_exit_by_themselves(demo_cache, long_input, tmp_path) -> None:
    daemon = slurm_daemon(tmp_path, demo_cache, heartbeat_timeout=5.0)
    try:
        job_id = submit(daemon.client, long_input, tmp_path / "out")
        busy_pilot(daemon.client, job_id)
        daemon.kill9()  # no shutdown, no scancel: only the pilots' own watch is left
        wait_for(lambda: not pilots_of(daemon), 60, "the orphaned pilots to exit", interval=0.5)
    finally:
        daemon.close()


def test_a_job_on_a_down_partition_fails_with_slurms_reason(demo_cache, tmp_path) -> None:
    daemon = slurm_daemon(tmp_path, demo_cache, slurm_partition="down", slurm_start_timeout=3.0)
    try:
        job_id = submit(daemon.client, EXAMPLE, tmp_path / "out")
        status = daemon.client.wait_state(job_id, ("done", "failed"), timeout=60)
        assert status["state"] == "failed", status
        assert "PartitionDown" in status["error"], status
        assert not (tmp_path / "out" / "prediction_results.txt").exists()
        wait_for(lambda: not pilots_of(daemon), 30, "the pending pilots to be cancelled")
        stopped_leaving_no_pilot(daemon)
    finally:
        daemon.close()
