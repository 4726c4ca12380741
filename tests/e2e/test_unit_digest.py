"""Unit digests through a real virnucd: a unit whose bytes changed since planning (even
with the file's size and modification time kept) fails its job with "input changed since
submission", publishing nothing (tests/worker/test_unit_digest.py: the feed, in process).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.synthetic import random_lengths, write_fasta
from tests.support.harness import running_daemon
from tests.support.poll import wait_for
from tests.worker.test_unit_digest import rewrite


@pytest.fixture
def stopped_worker(tmp_path: Path, demo_cache: Path) -> Iterator[tuple[Any, int]]:
    """A virnucd with one worker, SIGSTOPped (continued at the end, whatever happens)."""
    with running_daemon(tmp_path / "state", demo_cache, workers=1) as daemon:
        pid = daemon.workers_ready(1)[0]["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            yield daemon, pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_an_input_rewritten_in_place_with_size_and_mtime_kept_fails_the_job(
    stopped_worker: tuple[Any, int], tmp_path: Path
) -> None:
    """The job is planned while its only worker is stopped; then its input is rewritten
    in place (same size, modification time put back: the fingerprint sees nothing)
    and the worker continues: it reads other bytes than were planned."""
    daemon, pid = stopped_worker
    path = tmp_path / "in.fa"
    write_fasta(path, random_lengths(40, seed=5), seed=5)
    out = tmp_path / "out"
    reply = daemon.client.call(
        "submit", input=str(path), output=str(out), profile="demo", checkpoint_every=3
    )
    assert reply["ok"], reply["error"]
    job = reply["result"]["job_id"]
    wait_for(
        lambda: daemon.client.result("status", job_id=job)["records_total"] == 40,
        30,
        "the job to be planned",
    )
    rewrite(path, len(path.read_bytes().rstrip()) - 1)  # in the last unit, whatever its size
    os.kill(pid, signal.SIGCONT)

    status = daemon.client.wait_state(job, ("done", "failed"), timeout=120)

    assert status["state"] == "failed", status
    assert "input changed since submission" in status["error"], status
    assert not out.exists() or not any(out.iterdir())
    wait_for(lambda: not (daemon.state_dir / "jobs" / job).exists(), 10, "the parts to go")


def test_a_gzip_job_whose_index_was_damaged_rebuilds_it_finishes_and_says_why(
    stopped_worker: tuple[Any, int], tmp_path: Path
) -> None:
    """The planner saves the `.gz` input's seek-point index in the job's directory; it
    is overwritten (same size) while the only worker is stopped: the worker refuses
    it by its SHA-256, logs why, and builds its own from one read of the input."""
    daemon, pid = stopped_worker
    plain = tmp_path / "in.fa"
    write_fasta(plain, random_lengths(40, seed=5), seed=5)
    path = tmp_path / "in.fa.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    reply = daemon.client.call(
        "submit", input=str(path), output=str(tmp_path / "out"), profile="demo"
    )
    assert reply["ok"], reply["error"]
    job = reply["result"]["job_id"]
    wait_for(
        lambda: daemon.client.result("status", job_id=job)["records_total"] == 40,
        30,
        "the job to be planned",
    )
    index = daemon.state_dir / "jobs" / job / "input-0.gzidx"
    size = index.stat().st_size
    with index.open("r+b") as out:
        out.seek(size // 2)
        out.write(bytes(b ^ 0xFF for b in index.read_bytes()[size // 2 : size // 2 + 16]))
    os.kill(pid, signal.SIGCONT)

    status = daemon.client.wait_state(job, ("done", "failed"), timeout=120)

    assert status["state"] == "done", status
    refused = [e for e in daemon.log_events() if e.get("event") == "gzip_index.unusable"]
    assert refused, daemon.log_tail()
    assert all("SHA-256" in e["reason"] for e in refused), refused
    rebuilt = [e for e in daemon.log_events() if e.get("event") == "gzip_index.rebuilt"]
    assert len(rebuilt) == 1, daemon.log_tail()  # once per worker, then kept
