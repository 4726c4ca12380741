"""The Slurm backend against local workers: pilot start-up, model loads, throughput.

Runs against the Slurm cluster on this machine (`.ci/slurm-setup.sh`; `sinfo` must
answer), demo models, synthetic coding DNA, side by side in one run:

1. Hello latency on an idle cluster: a job's submit (`job.submitted`) and the sbatch
   (`slurm.submitted`) to the first pilot's `worker.hello`, from virnucd's JSON log
   timestamps. Three times, the pilots idle-exiting in between (`idle_exit` 3 s).
2. Models loaded once per pilot: a job of 8 units through 2 pilots; pilots, units
   and `model_loads` per slot (`workers` op, log events).
3. Throughput: the same job through 2 warm Slurm pilots and through 2 warm local
   workers (a second virnucd), in rounds of one job each, who goes first
   alternating (A/B, B/A, ...); records/s, slurm/local per round and its median.

Every worker runs with OMP_NUM_THREADS=1 (pilots get `slurm_cpus = 1`) and nice 0
(local ones through `worker_nice = 0`, as pilots are not reniced). Goals are
printed beside the numbers, never asserted. virnucd polls squeue at its default
`slurm_poll_interval` (1 s), as a user's would.

    .venv/bin/python -m bench.bench_slurm [--records 4000] [--unit-records 250] [--rounds 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from virnuc.daemon.slots.slurm import PILOT_JOB_NAME
from virnuc.pipeline.models import ensure_demo_models
from virnuc.pipeline.spec import demo_spec

from .synthetic import random_lengths, write_fasta
from tests.support.harness import Daemon, free_port
from tests.support.poll import wait_for
from tests.support.slurm_cluster import slurm_available, squeue_jobs

PILOT = PILOT_JOB_NAME
HELLO_GOAL_S = 5.0
THROUGHPUT_GOAL = 0.10  # slurm within 10 % of local


def squeue_pilots() -> list[dict[str, str]]:
    return squeue_jobs(PILOT)


def timestamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


class BenchDaemon(Daemon):
    """virnucd on its own state dir (demo models copied in), with a config file."""

    def __init__(self, root: Path, cache: Path, settings: dict[str, object], *args: str):
        root.mkdir()
        self.name = root.name
        config = root / "virnucd.toml"
        config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
        # local workers' threads; pilots get theirs from slurm_cpus
        env = {"OMP_NUM_THREADS": "1"}
        super().__init__(root / "state", cache, "--config", str(config), *args, env=env)
        try:
            self.start()
        except BaseException:
            self.close()  # a virnucd that never answered must not outlive the bench
            raise

    def workers(self) -> list[dict[str, Any]]:
        return self.client.result("workers")["workers"]  # type: ignore[no-any-return]

    def wait_states(self, states: set[str], timeout: float) -> list[dict[str, Any]]:
        def probe() -> list[dict[str, Any]] | None:
            workers = self.workers()
            return workers if all(w["state"] in states for w in workers) else None

        return wait_for(probe, timeout, f"all workers of {self.name} {'/'.join(sorted(states))}")

    def run_job(self, fasta: Path, out: Path) -> tuple[str, float]:
        """Submit, wait until done; the job id and the wall time as the client sees it."""
        start = time.perf_counter()
        job = self.client.result(
            "submit", input=str(fasta), output=str(out), profile="demo", force=True
        )
        job_id = str(job["job_id"])
        status = self.client.wait_state(job_id, ("done", "failed", "killed"), timeout=600)
        if status["state"] != "done":
            raise RuntimeError(f"job {job_id} on {self.name}: {status}")
        return job_id, time.perf_counter() - start


def slurm_settings(**extra: object) -> dict[str, object]:
    return {
        "backend": "slurm",
        "worker_endpoint": f"tcp://127.0.0.1:{free_port()}",
        "slurm_max_workers": 2,
        "slurm_cpus": 1,
        "hello_timeout": 90.0,
        **extra,
    }


def cluster_idle(daemon: BenchDaemon) -> None:
    """Every slot vacant and no pilot left in Slurm's queue."""
    daemon.wait_states({"vacant"}, 120)
    wait_for(lambda: not squeue_pilots(), 60, "no pilot in squeue")


def hello_latency(daemon: BenchDaemon, fasta: Path, out: Path, runs: int = 3) -> None:
    print(f"1. hello latency, idle cluster (goal: submit -> first hello <= {HELLO_GOAL_S:g} s)")
    from_submit, from_sbatch = [], []
    for run in range(runs):
        cluster_idle(daemon)
        since = len(daemon.log_events())
        job_id, _ = daemon.run_job(fasta, out / f"latency{run}")
        events = daemon.log_events()[since:]
        submitted = next(
            e for e in events if e["event"] == "job.submitted" and e["job_id"] == job_id
        )
        sbatch = next(e for e in events if e["event"] == "slurm.submitted")
        hello = next(e for e in events if e["event"] == "worker.hello")
        from_submit.append(timestamp(hello) - timestamp(submitted))
        from_sbatch.append(timestamp(hello) - timestamp(sbatch))
        print(
            f"   run {run + 1}: submit -> hello {from_submit[-1]:5.2f} s   "
            f"sbatch -> hello {from_sbatch[-1]:5.2f} s   "
            f"(submit -> sbatch {timestamp(sbatch) - timestamp(submitted):.2f} s, "
            f"array {sbatch['array']}, first hello from {hello['worker']})"
        )
    median = statistics.median(from_submit)
    print(
        f"   median: submit -> hello {median:.2f} s = {median / HELLO_GOAL_S:.2f} x the "
        f"{HELLO_GOAL_S:g} s goal ({'met' if median <= HELLO_GOAL_S else 'MISSED'}); "
        f"sbatch -> hello {statistics.median(from_sbatch):.2f} s"
    )
    cluster_idle(daemon)


def loads_per_pilot(daemon: BenchDaemon, title: str) -> None:
    """Per slot: pilots it had (hellos), units it was given, model sets it loaded.

    The goal is at most one load per pilot; a pilot that came up after its job's
    last unit was taken loads none, so loads may fall short of pilots.
    """
    events = daemon.log_events()
    hellos = Counter(e["worker"] for e in events if e["event"] == "worker.hello")
    units = Counter(e["worker"] for e in events if e["event"] == "unit.assigned")
    print(f"   {title}:")
    ok = True
    for worker in daemon.workers():
        wid = worker["id"]
        ok &= worker["model_loads"] <= hellos[wid]
        print(
            f"     slot {wid}: {worker['state']:>6}, pilot {worker.get('slurm_job_id', '-'):>7} "
            f"on {worker.get('node', '-')}; pilots so far {hellos[wid]}, "
            f"units {units[wid]:3d}, model_loads {worker['model_loads']}"
        )
    print(f"     model_loads <= pilots (at most 1 load per pilot): {'met' if ok else 'MISSED'}")


def throughput(
    slurm: BenchDaemon, local: BenchDaemon, fasta: Path, records: int, out: Path, rounds: int
) -> None:
    print(f"3. throughput: {records} records, 2 warm workers each, slurm/local x {rounds}")
    rates: dict[str, list[float]] = {"slurm": [], "local": []}
    for i in range(rounds):
        # who goes first alternates: a round's first job has shown itself slower
        for daemon in (slurm, local) if i % 2 == 0 else (local, slurm):
            _, seconds = daemon.run_job(fasta, out / f"{daemon.name}{i}")
            rates[daemon.name].append(records / seconds)
            print(
                f"   round {i + 1} {daemon.name}: {seconds:6.2f} s  "
                f"{records / seconds:7.1f} records/s"
            )
    s, loc = statistics.median(rates["slurm"]), statistics.median(rates["local"])
    # each round's pair ran back to back, so its ratio shares the machine's load of
    # the moment; the median of those ratios is the figure the goal is judged on
    ratios = [a / b for a, b in zip(rates["slurm"], rates["local"], strict=True)]
    ratio = statistics.median(ratios)
    print(
        f"   median: slurm {s:.1f} records/s, local {loc:.1f} records/s; "
        f"slurm/local per round {', '.join(f'{r:.3f}' for r in ratios)}, median {ratio:.3f}; "
        f"goal within {100 * THROUGHPUT_GOAL:.0f} %: "
        f"{'met' if abs(ratio - 1) <= THROUGHPUT_GOAL else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000, help="records of the timed job")
    parser.add_argument("--unit-records", type=int, default=250, help="unit size, both daemons")
    parser.add_argument("--rounds", type=int, default=4, help="slurm/local pairs timed")
    args = parser.parse_args()
    if why := slurm_available():
        sys.exit(f"no Slurm here: {why}")
    if squeue_pilots():
        sys.exit(f"{PILOT} jobs already in squeue, the cluster is not idle: {squeue_pilots()}")
    daemons: list[BenchDaemon] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = root / "out"
        out.mkdir()
        cache = root / "cache"
        ensure_demo_models(demo_spec(cache))
        tiny, many, job = root / "tiny.fa", root / "many.fa", root / "job.fa"
        write_fasta(tiny, random_lengths(20, seed=3), seed=3)
        many_lengths = random_lengths(8 * args.unit_records, seed=4, low=300, high=800)
        write_fasta(many, many_lengths, seed=4)
        write_fasta(job, random_lengths(args.records, seed=2, low=1000, high=3000), seed=2)
        try:
            cold = BenchDaemon(root / "latency", cache, slurm_settings(idle_exit=3.0))
            daemons.append(cold)
            hello_latency(cold, tiny, out)
            loads_per_pilot(cold, "those pilots' model loads")
            cold.stop(120)

            # the same unit size for both; pilots stay up (idle_exit 600 s) once warm
            unit = {"unit_records": args.unit_records}
            slurm = BenchDaemon(root / "slurm", cache, slurm_settings(idle_exit=600.0, **unit))
            daemons.append(slurm)
            # pilots run un-niced (a node's CPUs are the job's own), so local ones too
            local = BenchDaemon(root / "local", cache, {"worker_nice": 0, **unit}, "--workers", "2")
            daemons.append(local)
            local.wait_states({"idle"}, 120)
            print(
                f"2. models loaded once per pilot: {8 * args.unit_records} records in units "
                f"of {args.unit_records} (8 units; also both daemons' warm-up for 3.)"
            )
            for daemon in (slurm, local):
                daemon.run_job(many, out / f"warm-{daemon.name}")
            loads_per_pilot(slurm, "after the 8-unit job")
            throughput(slurm, local, job, args.records, out, args.rounds)
            loads_per_pilot(slurm, f"after the {args.rounds} timed jobs too")
        finally:
            for daemon in daemons:
                with contextlib.suppress(AssertionError):  # it did not stop: killed, go on
                    daemon.stop(120)
                daemon.close()
        with contextlib.suppress(AssertionError):  # wait_for's timeout; reported below
            wait_for(lambda: not squeue_pilots(), 60, "squeue to drop every pilot")
        left = [f"{job['id']} {job['state']}" for job in squeue_pilots()]
        print(f"pilots in squeue at the end: {', '.join(left) or 'none'}")


if __name__ == "__main__":
    main()
