"""Exactly once, whatever dies: SIGKILLs of workers and of virnucd, faults, corrupt parts.

Every test ends by comparing the daemon's outputs with an uninterrupted in-process run:
same ids in the same order, same labels, scores (and embeddings) within 1e-6.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from virnuc.pipeline.run import predict_file

from bench.synthetic import random_lengths, write_fasta
from tests.harness import Daemon, assert_same_outputs, wait_for, worker_pids_alive

pytestmark = pytest.mark.e2e

# Fast restarts: the tests kill workers on purpose, so backoff would only slow them down.
FAST = "restart_backoff_max = 0.5\nheartbeat_timeout = 20\nstop_grace = 20\nblock_frames = 64\n"


def config(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "virnucd.toml"
    path.write_text(FAST + extra)
    return str(path)


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crash-in") / "medium.fa"
    write_fasta(path, random_lengths(60, seed=17), seed=17)
    return path


@pytest.fixture(scope="module")
def medium_reference(demo_models, medium: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("crash-ref")
    predict_file(demo_models, medium, out)
    return out


def submit(daemon: Daemon, fasta: Path, out: Path, **extra) -> str:
    return daemon.client.result(
        "submit", input=str(fasta), output=str(out), profile="demo", **extra
    )["job_id"]


def progressed(daemon: Daemon, job: str, records: int) -> bool:
    return daemon.client.result("status", job_id=job)["records_done"] >= records


def test_daemon_sigkill_leaves_no_orphans_and_a_restart_resumes_the_job(
    tmp_path, demo_cache, medium, medium_reference
) -> None:
    daemon = Daemon(tmp_path / "state", demo_cache, "--workers", "2", "--config", config(tmp_path))
    try:
        daemon.start()
        daemon.workers_ready(2)
        job = submit(daemon, medium, tmp_path / "out", checkpoint_every=3)
        wait_for(lambda: progressed(daemon, job, 10), 60, "progress")
        pids = [w["pid"] for w in daemon.client.result("workers")["workers"]]
        daemon.kill9()
        wait_for(lambda: not worker_pids_alive(pids), 10, "the orphaned workers to exit")
        daemon.start()  # same state dir: the job resumes without a new submit
        status = daemon.client.wait_state(job, ("done", "failed"))
        assert status["state"] == "done", status
        assert_same_outputs(medium_reference, tmp_path / "out")
    finally:
        daemon.close()


@pytest.mark.parametrize(
    "point", ["before_rename@3", "after_rename@3", "after_ack@3", "mid_unit@1"]
)
def test_a_worker_killed_at_a_fault_point_ends_exactly_once(
    point, tmp_path, demo_cache, medium, medium_reference
) -> None:
    marker = tmp_path / f"fired.{point.split('@')[0]}"
    env = {"VIRNUC_FAULT": point, "VIRNUC_FAULT_MARKER": str(tmp_path / "fired")}
    daemon = Daemon(
        tmp_path / "state", demo_cache, "--workers", "1", "--config", config(tmp_path), env=env
    )
    try:
        daemon.start()
        job = submit(daemon, medium, tmp_path / "out", checkpoint_every=2)
        status = daemon.client.wait_state(job, ("done", "failed"))
        assert status["state"] == "done", status
        assert marker.exists(), "the fault never fired"
        assert status["restarts"] == 1
        assert_same_outputs(medium_reference, tmp_path / "out")
        assert daemon.stop() == 0
    finally:
        daemon.close()


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crash-in") / "large.fa"
    write_fasta(path, random_lengths(400, seed=19), seed=19)
    return path


def recorded_parts(state: Path) -> list[tuple[str, int, str, int, int]]:
    with sqlite3.connect(state / "virnuc.db") as db:
        return db.execute(
            "SELECT path, size, sha256, unit_id, first_record FROM parts"
            " ORDER BY unit_id, first_record"
        ).fetchall()


def first_part_per_unit(state: Path) -> list[tuple[str, int, str, int, int]]:
    firsts: dict[int, tuple[str, int, str, int, int]] = {}
    for part in recorded_parts(state):
        firsts.setdefault(part[3], part)
    return list(firsts.values())


def test_corrupt_missing_stray_and_misplaced_parts_are_recomputed(
    tmp_path, demo_cache, demo_models, large
) -> None:
    state = tmp_path / "state"
    daemon = Daemon(state, demo_cache, "--workers", "2", "--config", config(tmp_path))
    try:
        daemon.start()
        job = submit(daemon, large, tmp_path / "out", checkpoint_every=2)
        wait_for(lambda: len(first_part_per_unit(state)) >= 5, 120, "parts of five units")
        assert daemon.stop() == 0  # graceful: the job waits, unfinished, in SQLite
        (a, _, _, _, _), (b, _, _, _, _), (c, *_), (d, *_), (e, e_size, e_sha, *_) = (
            first_part_per_unit(state)[:5]
        )
        Path(a).write_bytes(Path(a).read_bytes()[:100])  # truncated
        data = bytearray(Path(b).read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte
        Path(b).write_bytes(bytes(data))
        Path(c).unlink()  # deleted
        shutil.copyfile(e, d)  # another range's part, with a digest that matches its row
        with sqlite3.connect(state / "virnuc.db") as db:
            db.execute("UPDATE parts SET size = ?, sha256 = ? WHERE path = ?", (e_size, e_sha, d))
        stray = Path(a).with_name("u000099-r0000009999.npz")
        stray.write_bytes(b"not recorded anywhere")

        daemon.start()
        status = daemon.client.wait_state(job, ("done", "failed"))
        assert status["state"] == "done", status
        assert status["records_recomputed"] > 0
        predict_file(demo_models, large, tmp_path / "reference")
        assert_same_outputs(tmp_path / "reference", tmp_path / "out")
        log = daemon.log_path.read_text()
        for reason in ("size is 100 bytes", "SHA-256 is", "cannot read", "does not match"):
            assert reason in log, f"no assembly rejection mentioning {reason!r}"
        assert "parts.unrecorded_removed" in log
    finally:
        daemon.close()


def assert_same_embeddings(expected: Path, got: Path, atol: float = 1e-6) -> None:
    with h5py.File(expected / "embeddings.h5") as want, h5py.File(got / "embeddings.h5") as have:
        assert list(have["ids"][:]) == list(want["ids"][:])
        for name in ("nucleotide", "protein"):
            np.testing.assert_allclose(have[name][:], want[name][:], rtol=0, atol=atol)


def test_chaos_twenty_sigkills_of_workers_and_daemon(
    tmp_path, demo_cache, demo_models, request
) -> None:
    seed = int(os.environ.get("VIRNUC_CHAOS_SEED", "20261128"))
    rng = random.Random(seed)
    request.node.user_properties.append(("chaos_seed", seed))
    fasta = tmp_path / "chaos.fa"
    write_fasta(fasta, random_lengths(2000, seed=seed % 1000, low=100, high=700), seed=seed)
    reference = tmp_path / "reference"
    predict_file(demo_models, fasta, reference, save_embeddings=True)

    state = tmp_path / "state"
    cfg = config(tmp_path, "max_unit_failures = 100\nstandby_delay = 0\n")
    # Each point fires once over the whole run: workers die in a part write, after a
    # rename and after an ack, and virnucd itself dies in the middle of assembly.
    points = ["before_rename@2", "after_rename@3", "after_ack@4", "mid_assembly@2"]
    env = {"VIRNUC_FAULT": ",".join(points), "VIRNUC_FAULT_MARKER": str(tmp_path / "fired")}
    kills: list[str] = []
    pids: list[int] = []
    daemon_kills_at = set(rng.sample(range(3, 21), 3))  # the rest are worker kills
    last_done = -1

    def restart(daemon: Daemon, why: str) -> Daemon:
        daemon.kill9()
        daemon.close()
        wait_for(lambda: not worker_pids_alive(pids), 10, "the orphaned workers to exit")
        kills.append(why)
        return Daemon(state, demo_cache, "--workers", "2", "--config", cfg, env=env).start()

    daemon = Daemon(state, demo_cache, "--workers", "2", "--config", cfg, env=env).start()
    job = submit(daemon, fasta, tmp_path / "out", checkpoint_every=20, save_embeddings=True)
    try:
        while True:
            assert daemon.process is not None
            if daemon.process.poll() is not None:  # it killed itself at its fault point
                daemon = restart(daemon, "daemon:fault")
                continue
            try:
                status = daemon.client.call("status", timeout=2, job_id=job)["result"]
                workers = daemon.client.call("workers", timeout=2)["result"]["workers"]
            except TimeoutError:
                continue
            if status["state"] in ("done", "failed", "killed"):
                break
            pids = [w["pid"] for w in workers if w["pid"]]
            if len(kills) >= 24 or status["records_done"] == last_done:
                time.sleep(0.02)  # poll: each kill waits for some progress since the last
                continue
            last_done = status["records_done"]
            time.sleep(rng.uniform(0.0, 0.3))  # the random moment of the next kill
            if len(kills) in daemon_kills_at:
                daemon = restart(daemon, "daemon")
            elif busy := [w for w in workers if "job_id" in w]:
                with contextlib.suppress(ProcessLookupError):  # it may have died meanwhile
                    os.kill(rng.choice(busy)["pid"], signal.SIGKILL)
                    kills.append("worker")
        fired = [p for p in points if (tmp_path / f"fired.{p.split('@')[0]}").exists()]
        summary = f"seed {seed}: {len(kills)} kills {kills}, faults fired {fired}, {status}"
        print(summary)  # shown with -s, and the seed reproduces the run: VIRNUC_CHAOS_SEED
        assert status["state"] == "done", summary
        assert len(kills) + len(fired) >= 20, summary
        assert sum(k.startswith("daemon") for k in kills) >= 2, summary
        assert len(fired) == len(points), summary
        assert_same_outputs(reference, tmp_path / "out")
        assert_same_embeddings(reference, tmp_path / "out")
    finally:
        daemon.close()
