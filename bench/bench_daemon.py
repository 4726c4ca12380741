"""virnucd's overhead against the in-process pipeline, and `status` latency under load.

1. The same job (demo models, synthetic coding DNA) timed in-process (`predict_file`,
   models already loaded) and through a real virnucd with one worker (models warmed by
   a first job), alternated over `--rounds`. Prints each round and the median overhead.
2. 1,000 `status` round trips (median, p99) while 2 workers are busy on a job.

    .venv/bin/python -m bench.bench_daemon [--records 1500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgpack
import zmq

from virnuc.pipeline.models import ModelSet, ensure_demo_models
from virnuc.pipeline.run import predict_file
from virnuc.pipeline.spec import demo_spec

from .synthetic import random_lengths, write_fasta


class Client:
    def __init__(self, state_dir: Path):
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.REQ)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(f"ipc://{state_dir}/control.sock")

    def call(self, op: str, **args: object) -> dict:
        self.socket.send(msgpack.packb({"v": 1, "id": uuid.uuid4().hex, "op": op, "args": args}))
        if not self.socket.poll(60_000):
            raise TimeoutError(op)
        reply = msgpack.unpackb(self.socket.recv())
        if not reply["ok"]:
            raise RuntimeError(reply["error"])
        return reply["result"]  # type: ignore[no-any-return]

    def run_job(self, fasta: Path, out: Path, **extra: object) -> float:
        start = time.perf_counter()
        job = self.call(
            "submit", input=str(fasta), output=str(out), profile="demo", force=True, **extra
        )
        while self.call("status", job_id=job["job_id"])["state"] not in ("done", "failed"):
            time.sleep(0.05)
        return time.perf_counter() - start

    def close(self) -> None:
        self.socket.close()
        self.context.term()


def start_daemon(state_dir: Path, cache: Path, workers: int) -> subprocess.Popen[bytes]:
    shutil.copytree(cache, state_dir / "models")
    command = [
        sys.executable,
        "-m",
        "virnuc.daemon.main",
        "--state-dir",
        str(state_dir),
        "--workers",
        str(workers),
        "--log-format",
        "json",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = Client(state_dir)
    client.call("ping")
    deadline = time.monotonic() + 120
    while sum(w["state"] == "idle" for w in client.call("workers")["workers"]) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError("workers did not start")
        time.sleep(0.1)
    client.close()
    return process


def stop_daemon(state_dir: Path, process: subprocess.Popen[bytes]) -> None:
    client = Client(state_dir)
    client.call("shutdown")
    client.close()
    process.wait(120)


def overhead(root: Path, cache: Path, fasta: Path, warmup: Path, rounds: int) -> None:
    """The same job in-process and through virnucd, alternated `rounds` times (this
    machine is noisy: a ratio is only taken between neighbours); prints each round
    and the median ratio."""
    models = ModelSet.load(demo_spec(cache))
    predict_file(models, warmup, root / "warm-inproc", force=True)
    state = root / "state1"
    process = start_daemon(state, cache, workers=1)
    client = Client(state)
    client.run_job(warmup, root / "warm-daemon")
    ratios = []
    try:
        for n in range(rounds):
            start = time.perf_counter()
            predict_file(models, fasta, root / "inproc", force=True)
            in_process = time.perf_counter() - start
            through_daemon = client.run_job(fasta, root / "daemon")
            ratios.append(through_daemon / in_process)
            print(
                f"round {n + 1}: in-process {in_process:6.2f} s, via virnucd "
                f"{through_daemon:6.2f} s (1 worker, models warm): {100 * (ratios[-1] - 1):+.1f} %"
            )
    finally:
        client.close()
        stop_daemon(state, process)
    print(f"overhead, median of {rounds} rounds: {100 * (statistics.median(ratios) - 1):+.1f} %")


def status_latency(root: Path, cache: Path, fasta: Path) -> None:
    state = root / "state2"
    process = start_daemon(state, cache, workers=2)
    client = Client(state)
    job = client.call("submit", input=str(fasta), output=str(root / "busy"), profile="demo")
    while not all(w["state"] == "busy" for w in client.call("workers")["workers"]):
        time.sleep(0.05)
    samples = []
    for _ in range(1000):
        start = time.perf_counter()
        client.call("status", job_id=job["job_id"])
        samples.append(1000 * (time.perf_counter() - start))
    busy = sum(w["state"] == "busy" for w in client.call("workers")["workers"])
    client.call("kill", job_id=job["job_id"])
    client.close()
    stop_daemon(state, process)
    samples.sort()
    print(
        f"status round trip over 1000 calls ({busy} workers still busy at the end): "
        f"median {statistics.median(samples):.2f} ms, p99 {samples[989]:.2f} ms, "
        f"max {samples[-1]:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=5, help="alternated in-process/daemon runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        ensure_demo_models(demo_spec(cache))
        fasta, warmup = root / "job.fa", root / "warmup.fa"
        write_fasta(fasta, random_lengths(args.records, seed=2, low=1000, high=3000), seed=2)
        write_fasta(warmup, random_lengths(20, seed=3), seed=3)
        overhead(root, cache, fasta, warmup, args.rounds)
        status_latency(root, cache, fasta)


if __name__ == "__main__":
    main()
