"""The duplicate-id check's memory: every hash in memory against hashes spilled by bucket.

Writes a FASTQ of READS no-frame reads (default 2,000,000) and validates it with
`scan_inputs` twice, each in a fresh interpreter: once with a chunk larger than the
file (every hash held in memory and sorted at once, as before issue 23) and once
spilling every CHUNK hashes (default 262,144, so that the spill shows at this size;
virnucd spills every 2,097,152). Prints each run's peak RSS growth and time side by
side. No goal is asserted.

    .venv/bin/python -m bench.bench_ids [READS] [CHUNK]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from bench.synthetic import write_fastq

MEASURE = """
import resource, sys, time
import numpy
from virnuc.pipeline import record_ids
from virnuc.pipeline.inputs import scan_inputs
record_ids.CHUNK = int(sys.argv[2])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
scan_inputs([sys.argv[1]])
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(f"{grown:.1f} {time.perf_counter() - started:.1f}")
"""


def measure(path: Path, chunk: int) -> tuple[float, float]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), str(chunk)],
        check=True,
        capture_output=True,
        text=True,
    )
    grown, seconds = done.stdout.split()
    return float(grown), float(seconds)


def main() -> None:
    reads = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    chunk = int(sys.argv[2]) if len(sys.argv) > 2 else 262_144
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reads.fq"
        write_fastq(path, reads, seed=1)
        held = measure(path, reads + 1)
        spilled = measure(path, chunk)
    print(f"{reads:,} reads: peak RSS growth MiB / seconds")
    print(f"  all hashes in memory        {held[0]:8.1f} {held[1]:7.1f}")
    print(f"  spilled every {chunk:,} {spilled[0]:8.1f} {spilled[1]:7.1f}")
    print(
        f"  bytes per read held: {held[0] * 2**20 / reads:.1f} vs {spilled[0] * 2**20 / reads:.1f}"
    )


if __name__ == "__main__":
    main()
