"""First vs last unit read time of a FASTQ.gz, without and with its seek-point index.

    .venv/bin/python -m bench.bench_gzip_seek [READS] [--keep DIR]

Writes READS (default 1,000,000) random 150-base reads gzipped, cuts them into
1000-record units as the planner does (saving the index, timed), then reads the first
and the last unit as a worker does (its records, then its digest range): once through
the standard library's gzip (no index: decompressing from byte 0, as before issue 23)
and once through the index.
"""

from __future__ import annotations

import gzip
import os
import sys
import tempfile
import time
from pathlib import Path

from virnuc.daemon.jobs.planner import unit_spans
from virnuc.input_digest import digest_of_range
from virnuc.pipeline import gzip_index
from virnuc.pipeline.inputs import read_records

UNIT = 1000


def write_fastq_gz(path: Path, reads: int) -> None:
    bases = bytes.maketrans(bytes(range(256)), b"ACGT" * 64)
    quals = bytes.maketrans(bytes(range(256)), bytes(33 + i % 40 for i in range(256)))
    with gzip.open(path, "wb", compresslevel=6) as out:
        batch = []
        for i in range(reads):
            noise = os.urandom(300)
            batch.append(
                b"@r%d\n%s\n+\n%s\n"
                % (i, noise[:150].translate(bases), noise[150:].translate(quals))
            )
            if len(batch) == 10_000:
                out.write(b"".join(batch))
                batch = []
        out.write(b"".join(batch))


def read_unit(path: Path, span: tuple[int, int, int, str]) -> float:
    first, start, end, digest = span
    began = time.perf_counter()
    got = sum(1 for _ in read_records(path, offset=start, first_index=first, count=UNIT))
    if got == 0 or digest_of_range(path, start, end) != digest:
        raise SystemExit(f"unit at {start}: read wrong")
    return time.perf_counter() - began


def main() -> None:
    reads = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reads.fq.gz"
        write_fastq_gz(path, reads)
        began = time.perf_counter()
        unindexed = len(list(unit_spans(path, UNIT)))
        plain_pass = time.perf_counter() - began
        began = time.perf_counter()
        spans = list(unit_spans(path, UNIT, Path(tmp) / "input-0.gzidx"))
        planned = time.perf_counter() - began
        if unindexed != len(spans):
            raise SystemExit("the two passes cut different units")
        index = gzip_index.describe(Path(tmp) / "input-0.gzidx")
        if index is None:
            raise SystemExit("the index was not saved")
        print(f"{reads} reads, {path.stat().st_size / 1e6:.0f} MB compressed, {len(spans)} units")
        print(f"planner's cutting pass: {plain_pass:.1f} s through gzip (before), ", end="")
        print(f"{planned:.1f} s indexing (after); index {index.size / 1e6:.1f} MB")
        for label, used in (("no index (before)", None), ("with index (after)", index)):
            gzip_index.use(str(path), used)
            first, last = read_unit(path, spans[0]), read_unit(path, spans[-1])
            print(f"{label:20} first unit {first * 1e3:8.1f} ms   last unit {last * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
