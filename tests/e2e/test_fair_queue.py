"""End to end: the fair queue between owners, on a real virnucd with one real worker.

One owner's big job holds the only worker; another owner's small job, submitted after
it started, gets the worker at the big job's next unit boundary and finishes while
the big job still runs (first in, first out by job, it would wait for all of it).

The big job's owner is another user: until submits record the caller as owner
(issue 22's identity work), the test records the big job with an owner before
virnucd starts, as a job submitted by uid 1001 that virnucd resumes; the small job
is submitted over the socket by this test (no owner recorded, or root's once the
caller is recorded: another owner either way).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from virnuc.daemon.progress.log import NewJob, ProgressLog
from virnuc.pipeline.spec import demo_spec

from bench.synthetic import random_lengths, write_fasta
from tests.support.harness import Daemon, write_fasta_part

EXAMPLE = Path(__file__).parents[2] / "examples" / "example.fasta"
OTHER_USER = "uid:1001"


def record_job_of(state_dir: Path, owner: str, fasta: Path, out: Path) -> str:
    """A job of `owner` as its submit records it, for virnucd to take up when it starts."""

    async def create() -> str:
        progress = await ProgressLog.open(state_dir / "virnuc.db")
        try:
            spec = demo_spec(state_dir / "models")
            job = NewJob("b1b1b1b1", str(fasta), str(out), spec, checkpoint_every=2, owner=owner)
            return (await progress.create_job(job)).job_id
        finally:
            await progress.close()

    return asyncio.run(create())


def units_assigned(daemon: Daemon) -> list[str]:
    """The jobs of the units handed out so far, in order (virnucd's log)."""
    return [e["job_id"] for e in daemon.log_events() if e.get("event") == "unit.assigned"]


def test_another_owners_small_job_finishes_while_a_big_job_holds_the_only_worker(
    tmp_path: Path, demo_cache: Path
) -> None:
    big_input, small_input = tmp_path / "big.fa", tmp_path / "small.fa"
    write_fasta(big_input, random_lengths(48, seed=3), seed=3)  # 12 units of 4 records
    write_fasta_part(EXAMPLE, small_input, 0, 4)  # one unit
    config = tmp_path / "virnucd.toml"
    config.write_text("unit_records = 4\n")
    daemon = Daemon(tmp_path / "state", demo_cache, "--workers", "1", "--config", str(config))
    try:
        big = record_job_of(daemon.state_dir, OTHER_USER, big_input, tmp_path / "big-out")
        daemon.start()
        daemon.workers_ready(1)
        daemon.client.wait_state(big, ("running",))
        reply = daemon.client.call(
            "submit", input=str(small_input), output=str(tmp_path / "small-out"), profile="demo"
        )
        assert reply["ok"], reply["error"]
        small = reply["result"]["job_id"]

        assert daemon.client.wait_state(small, ("done", "failed"))["state"] == "done"

        big_status = daemon.client.result("status", job_id=big)
        assert big_status["state"] == "running", big_status
        assert big_status["records_done"] < big_status["records_total"]
        order = units_assigned(daemon)
        # The big job's unit that ran at the submit, and one more at most if the small
        # job was still being planned when that unit ended; then the small job's.
        assert order.index(small) <= 2, order
        killed = daemon.client.result("kill", job_id=big)
        assert killed["state"] == "killed"
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.close()
