"""Records per second of the service's own path: a job over reads that have no frame.

No-frame reads (150 bases, a stop codon in all six frames: bench/synthetic.py) keep
every model idle, so a job over them costs only virnucd's path: planning, the worker
reading units and writing parts, the assembler merging parts into the outputs, and
the report. One fresh virnucd with one CPU worker runs `--jobs` jobs over the same
file (the first one also warms the worker); each job prints records/s from submit to
done, and from the end of planning (the job's records counted) to done, which leaves
the planning pass out.

    .venv/bin/python -m bench.bench_records [--reads 200000] [--jobs 2] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from virnuc.pipeline.models import ensure_demo_models
from virnuc.pipeline.spec import demo_spec

from .bench_daemon import Client, start_daemon, stop_daemon
from .bench_scale import run_job
from .synthetic import write_fastq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=200_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--tmp", type=Path, default=None, help="where the inputs go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        cache = root / "cache"
        ensure_demo_models(demo_spec(cache))
        reads = root / "reads.fastq"
        write_fastq(reads, args.reads, seed=23)
        state = root / "state"
        started = time.perf_counter()
        process = start_daemon(state, cache, workers=1)
        start_up = time.perf_counter() - started
        client = Client(state)
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        print(f"{when}, {os.cpu_count()} cores; virnucd, 1 CPU worker, demo models;")
        print(f"{args.reads:,} no-frame 150-base FASTQ reads; daemon start {start_up:.2f} s")
        try:
            for job in range(args.jobs):
                _, planning, total, _ = run_job(client, reads, root / f"out{job}")
                print(
                    f"job {job + 1}: {total:6.2f} s submit-to-done "
                    f"({args.reads / total:8,.0f} rec/s), planning {planning:5.2f} s, "
                    f"after planning {args.reads / (total - planning):8,.0f} rec/s"
                )
        finally:
            client.close()
            stop_daemon(state, process)


if __name__ == "__main__":
    main()
