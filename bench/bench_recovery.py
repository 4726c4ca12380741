"""Crash-safety costs, measured on a real virnucd with the demo models.

1. Checkpoint overhead: the same job with parts every N records vs. only at unit ends
   (one unit per job here, so "unit end" means one part), side by side in one run.
2. Recovery: SIGKILL a busy worker (one that has run long enough to have its warm
   spare), then time until its replacement reports its first new batch; the
   replacement's model-load time (from its log) is reported apart, as the target
   excludes it.
3. Records computed but lost per kill (progress reported before the kill minus what
   SQLite holds after it), against the checkpoint interval.

    .venv/bin/python -m bench.bench_recovery [--records 12000] [--checkpoint-every 250]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from virnuc.pipeline.models import ensure_demo_models
from virnuc.pipeline.spec import demo_spec

from .bench_daemon import Client, stop_daemon
from .synthetic import random_lengths, write_fasta

SETTLE = 15.0  # > the default standby_delay (10 s) plus a spare's import time


def start(state: Path, cache: Path, log: Path, unit_records: int) -> subprocess.Popen[bytes]:
    config = state.parent / f"{state.name}.toml"
    config.write_text(
        f"unit_records = {unit_records}\nrestart_backoff_max = 0.25\nblock_frames = 256\n"
    )
    command = [
        sys.executable,
        "-m",
        "virnuc.daemon.main",
        "--state-dir",
        str(state),
        "--workers",
        "1",
        "--config",
        str(config),
        "--log-format",
        "json",
    ]
    env = {**os.environ, "VIRNUC_CACHE_DIR": str(cache)}
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, env=env)
    client = Client(state)
    client.call("ping")
    while not any(w["state"] == "idle" for w in client.call("workers")["workers"]):
        time.sleep(0.05)
    client.close()
    return process


def timed_job(root: Path, cache: Path, fasta: Path, every: int, name: str) -> float:
    state = root / name
    process = start(state, cache, root / f"{name}.log", unit_records=10**9)
    client = Client(state)
    client.run_job(fasta, root / f"{name}-warm")  # models load on the first job
    seconds = client.run_job(fasta, root / f"{name}-out", checkpoint_every=every)
    client.close()
    stop_daemon(state, process)
    return seconds


def recovery(root: Path, cache: Path, fasta: Path, every: int, kills: int) -> None:
    state, log = root / "recovery", root / "recovery.log"
    process = start(state, cache, log, unit_records=10**9)
    client = Client(state)
    job = client.call("submit", input=str(fasta), output=str(root / "rec-out"), profile="demo",
                      checkpoint_every=every)["job_id"]  # fmt: skip
    waits, lost = [], []
    for _ in range(kills):
        settled = time.perf_counter() + SETTLE
        while client.call("status", job_id=job)["records_done"] < every or (
            time.perf_counter() < settled
        ):
            time.sleep(0.05)  # let the new worker run long enough to get its warm spare
        worker = client.call("workers")["workers"][0]
        computed = client.call("status", job_id=job)["records_done"]
        killed_at = time.perf_counter()
        os.kill(worker["pid"], signal.SIGKILL)
        while client.call("workers")["workers"][0]["pid"] == worker["pid"]:
            time.sleep(0.005)  # the daemon has seen the death once the pid changes
        durable = client.call("status", job_id=job)["records_done"]
        lost.append(computed - durable)
        while client.call("status", job_id=job)["records_done"] <= durable:
            time.sleep(0.005)
        waits.append(time.perf_counter() - killed_at)
    while client.call("status", job_id=job)["state"] not in ("done", "failed"):
        time.sleep(0.05)
    client.close()
    stop_daemon(state, process)
    loads = [json.loads(line).get("load_seconds", 0.0) for line in log.read_text().splitlines()
             if '"models.loaded"' in line][1:]  # fmt: skip
    starts = [w - load for w, load in zip(waits, loads, strict=False)]
    print(
        f"recovery, SIGKILL -> first new batch: {', '.join(f'{w:.2f}' for w in waits)} s; "
        f"without model load: {', '.join(f'{w:.2f}' for w in starts)} s"
    )
    print(f"records computed but lost per kill: {lost} (checkpoint interval {every})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=12000)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        ensure_demo_models(demo_spec(cache))
        fasta = root / "job.fa"
        write_fasta(fasta, random_lengths(args.records, seed=4, low=150, high=1200), seed=4)
        every = timed_job(root, cache, fasta, args.checkpoint_every, "every")
        at_end = timed_job(root, cache, fasta, 10**9, "unit-end")
        print(
            f"checkpoint every {args.checkpoint_every} records: {every:.2f} s; "
            f"only at unit end: {at_end:.2f} s; overhead {100 * (every / at_end - 1):+.1f} %"
        )
        recovery(root, cache, fasta, args.checkpoint_every, args.kills)


if __name__ == "__main__":
    main()
