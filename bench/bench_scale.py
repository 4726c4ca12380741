"""Does a job's cost grow linearly with its input? FASTQ.gz against plain, at two sizes.

For each size (`--sizes`, default 1,000,000 and 4,000,000 reads of 150 bases) it
writes synthetic FASTQ reads that have no frame (a stop codon in all six frames,
bench/synthetic.py), so no model runs and a job costs only the service's own path:
planning, reading units, parts, assembly. The file and its gzip copy (level 6) go
through a fresh virnucd (one CPU worker, the demo profile's tiny models) as two jobs,
plain first. Printed side by side, each beside its goal (never asserted):

* planning (submit until the job's records are counted) in MB/s of FASTQ text,
  against a bare in-process decompression of the same .gz, by zlib (what gzip and
  Python's gzip use) and by ISA-L (the fastest single-core inflate): the physical
  anchors. Goal: planning >= 0.5x bare decompression;
* the time to read the job's first and last unit (virnuc.db's planned units) through
  the pipeline's reader from the unit's start offset, through the job's seek-point
  index, as a worker does. Goal: last unit <= 2x the first (no unit pays to
  decompress the ones before it);
* seconds per million reads, submit to done: gz/plain (goal <= 1.2) and the larger
  size against the smaller, scaled to 4x reads (goal <= 4.4x the time);
* peak RSS (VmHWM) of virnucd and of its worker, and virnucd's extrapolated to 10^8
  records from its growth per record between the sizes (goal < 1 GB);
* one job over coding reads (`--coding-reads`, at most the smaller size) for scale:
  what the models add.

    .venv/bin/python -m bench.bench_scale [--sizes 1000000,4000000] [--coding-reads N]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isal import isal_zlib

from virnuc.pipeline import gzip_index, gzip_pass
from virnuc.pipeline.inputs import read_records
from virnuc.pipeline.models import ensure_demo_models
from virnuc.pipeline.spec import demo_spec

from .bench_daemon import Client, start_daemon, stop_daemon
from .synthetic import gzip_copy, write_fastq

MB = 1e6
TARGET_RECORDS = 10**8
POLL = 0.02  # seconds between status polls while a job is timed


@dataclass
class JobTiming:
    planning: float  # submit until records_total is set
    total: float  # submit until done
    first_unit_read: float
    last_unit_read: float
    units: int


@dataclass
class SizeResult:
    reads: int
    plain_bytes: int
    gz_bytes: int
    bare_decompress: dict[str, float]  # seconds for the whole .gz, by anchor
    jobs: dict[str, JobTiming] = field(default_factory=dict)  # "plain", "gz"
    daemon_hwm: int = 0  # bytes
    worker_hwm: int = 0
    coding: tuple[int, float, int] | None = None  # reads, seconds, frames


def vm_hwm(pid: int) -> int:
    """Peak resident set size of `pid`, in bytes (/proc/PID/status VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


ANCHORS = {"zlib": zlib, "isal": isal_zlib}  # the standard library's; the fastest at hand
INDEXING = "indexed_gzip"  # recording seek points: what planning's second thread does


def bare_decompress(gz: Path) -> dict[str, float]:
    """Seconds to decompress `gz` in-process to nowhere, by each anchor: the physical
    floor of any read of the file (zlib is what gzip and Python's gzip use; ISA-L is
    the fastest single-core inflate there is for it), and by indexed_gzip recording
    seek points alone, as planning's second thread does (pipeline/gzip_pass.py)."""
    seconds = {}
    for name, module in ANCHORS.items():
        start = time.perf_counter()
        inflater = module.decompressobj(31)
        with gz.open("rb") as raw:
            while chunk := raw.read(1 << 20):
                inflater.decompress(chunk)
        inflater.flush()
        seconds[name] = time.perf_counter() - start
    start = time.perf_counter()
    gzip_pass.build_index(gz)
    seconds[INDEXING] = time.perf_counter() - start
    return seconds


def unit_read_seconds(path: Path, start_offset: int, first_record: int, count: int) -> float:
    """Time to read one unit's records from its start offset, as a worker reads them."""
    start = time.perf_counter()
    read = sum(
        1 for _ in read_records(path, offset=start_offset, first_index=first_record, count=count)
    )
    elapsed = time.perf_counter() - start
    if read != count:
        raise RuntimeError(f"{path}: read {read} records at {start_offset}, expected {count}")
    return elapsed


def planned_units(state_dir: Path, job_id: str) -> tuple[list[tuple[int, int, int]], Any]:
    """(start_offset, first_record, record_count) of the job's units, in order, and the
    description of its input's seek-point index (None for a plain input)."""
    db = sqlite3.connect(f"file:{state_dir / 'virnuc.db'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT start_offset, first_record, record_count FROM units"
            " WHERE job_id = ? ORDER BY unit_id",
            (job_id,),
        ).fetchall()
        (indexes,) = db.execute(
            "SELECT gzip_indexes FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
    finally:
        db.close()
    index = (gzip_index.loads(indexes) or (None,))[0]
    return [(int(a), int(b), int(c)) for a, b, c in rows], index


def run_job(client: Client, path: Path, out: Path) -> tuple[str, float, float, dict[str, Any]]:
    """Submit `path` and wait for it: (job id, planning seconds, total seconds, status)."""
    start = time.perf_counter()
    job_id = client.call("submit", input=str(path), output=str(out), profile="demo", force=True)[
        "job_id"
    ]
    planning = None
    while True:
        status = client.call("status", job_id=job_id)
        now = time.perf_counter()
        if planning is None and status["records_total"] > 0:
            planning = now - start
        if status["state"] in ("done", "failed"):
            break
        time.sleep(POLL)
    if status["state"] != "done":
        raise RuntimeError(f"job over {path} failed: {status.get('error')}")
    return job_id, planning if planning is not None else now - start, now - start, status


def timed_job(client: Client, state: Path, path: Path, out: Path) -> JobTiming:
    job_id, planning, total, _ = run_job(client, path, out)
    units, index = planned_units(state, job_id)
    first, last = units[0], units[-1]
    gzip_index.use(str(path), index)  # as a worker does with its `assign`
    try:
        return JobTiming(
            planning=planning,
            total=total,
            first_unit_read=unit_read_seconds(path, *first),
            last_unit_read=unit_read_seconds(path, *last),
            units=len(units),
        )
    finally:
        gzip_index.use(str(path), None)


def measure_size(root: Path, cache: Path, reads: int, coding_reads: int) -> SizeResult:
    """One fresh virnucd: the plain job, the .gz job, and (if asked) a coding job."""
    work = root / f"r{reads}"
    work.mkdir()
    plain, gz = work / "reads.fastq", work / "reads.fastq.gz"
    write_fastq(plain, reads, seed=reads)
    gzip_copy(plain, gz)
    result = SizeResult(reads, plain.stat().st_size, gz.stat().st_size, bare_decompress(gz))
    state = work / "state"
    process = start_daemon(state, cache, workers=1)
    client = Client(state)
    try:
        for label, path in (("plain", plain), ("gz", gz)):
            result.jobs[label] = timed_job(client, state, path, work / f"out-{label}")
        # Peaks before the coding job: the no-frame jobs' own, at every size alike.
        result.daemon_hwm = vm_hwm(process.pid)
        pids = [w["pid"] for w in client.call("workers")["workers"] if w.get("pid")]
        result.worker_hwm = max((vm_hwm(pid) for pid in pids), default=0)
        if coding_reads:
            coding = work / "coding.fastq"
            write_fastq(coding, coding_reads, seed=reads + 1, coding=True)
            _, _, seconds, status = run_job(client, coding, work / "out-coding")
            result.coding = (coding_reads, seconds, status["frames_done"])
    finally:
        client.close()
        stop_daemon(state, process)
    return result


def verdict(value: float, goal: float, at_most: bool = True) -> str:
    met = value <= goal if at_most else value >= goal
    return f"{'<=' if at_most else '>='} {goal:g}  {'ok' if met else 'MISSED'}"


def row(name: str, cells: list[str], goal: str = "") -> str:
    return f"{name:<36}" + "".join(f"{c:>14}" for c in cells) + (f"   goal {goal}" if goal else "")


def size_rows(results: list[SizeResult]) -> list[str]:
    lines = [row("reads", [f"{r.reads:,}" for r in results])]
    lines.append(
        row(
            "FASTQ text MB / .gz MB",
            [f"{r.plain_bytes / MB:.0f}/{r.gz_bytes / MB:.0f}" for r in results],
        )
    )
    lines.append(row("units per job", [str(r.jobs["gz"].units) for r in results]))
    for name in (*ANCHORS, INDEXING):
        lines.append(
            row(
                f"bare decompression MB/s, {name}",
                [f"{r.plain_bytes / MB / r.bare_decompress[name]:.0f}" for r in results],
            )
        )
    for label in ("gz", "plain"):
        lines.append(
            row(
                f"planning MB/s, {label}",
                [f"{r.plain_bytes / MB / r.jobs[label].planning:.0f}" for r in results],
            )
        )
    for r in results:
        for name in (*ANCHORS, INDEXING):
            ratio = r.bare_decompress[name] / r.jobs["gz"].planning
            lines.append(
                row(
                    f"  planning .gz / bare {name}, {r.reads:,}",
                    [f"{ratio:.2f}x"],
                    verdict(ratio, 0.5, at_most=False),
                )
            )
    for label in ("gz", "plain"):
        lines.append(
            row(
                f"unit read s, first/last, {label}",
                [
                    f"{r.jobs[label].first_unit_read:.2f}/{r.jobs[label].last_unit_read:.2f}"
                    for r in results
                ],
            )
        )
    for r in results:
        ratio = r.jobs["gz"].last_unit_read / r.jobs["gz"].first_unit_read
        lines.append(
            row(f"  last / first unit .gz, {r.reads:,}", [f"{ratio:.2f}x"], verdict(ratio, 2.0))
        )
    for label in ("gz", "plain"):
        lines.append(
            row(
                f"s per million reads, {label}",
                [f"{r.jobs[label].total * 1e6 / r.reads:.1f}" for r in results],
            )
        )
    for r in results:
        ratio = r.jobs["gz"].total / r.jobs["plain"].total
        lines.append(row(f"  gz / plain time, {r.reads:,}", [f"{ratio:.2f}x"], verdict(ratio, 1.2)))
    return lines


def growth_rows(small: SizeResult, large: SizeResult) -> list[str]:
    """Time and memory from the smaller size to the larger one."""
    scale = large.reads / small.reads
    lines = []
    for label in ("gz", "plain"):
        ratio = large.jobs[label].total / small.jobs[label].total
        lines.append(
            row(
                f"{scale:g}x reads: time ratio, {label}",
                [f"{ratio:.2f}x"],
                verdict(ratio, 1.1 * scale),
            )
        )
    per_record = max(0.0, (large.daemon_hwm - small.daemon_hwm) / (large.reads - small.reads))
    projected = large.daemon_hwm + per_record * (TARGET_RECORDS - large.reads)
    lines.append(row("virnucd peak RSS MB", [f"{r.daemon_hwm / MB:.0f}" for r in (small, large)]))
    lines.append(row("worker peak RSS MB", [f"{r.worker_hwm / MB:.0f}" for r in (small, large)]))
    lines.append(row("  virnucd growth bytes/record", [f"{per_record:.1f}"]))
    lines.append(
        row(
            "  virnucd at 10^8 records MB",
            [f"{projected / MB:.0f}"],
            verdict(projected / MB, 1000.0),
        )
    )
    return lines


def coding_rows(results: list[SizeResult]) -> list[str]:
    lines = []
    for r in results:
        if r.coding is not None:
            reads, seconds, frames = r.coding
            lines.append(
                row(
                    f"coding reads (plain), {reads:,}",
                    [f"{seconds * 1e6 / reads:.1f} s/M", f"{frames:,} frames"],
                )
            )
    return lines


def report(results: list[SizeResult]) -> None:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{when}, {os.cpu_count()} cores; virnucd, 1 CPU worker, demo models;")
    print("no-frame 150-base FASTQ reads (no model runs), .gz = gzip level 6")
    lines = size_rows(results)
    if len(results) >= 2:
        lines += growth_rows(results[0], results[-1])
    for line in lines + coding_rows(results):
        print(line)


def parse_sizes(text: str) -> list[int]:
    sizes = sorted(int(part) for part in text.split(","))
    if len(sizes) < 1 or sizes[0] < 1:
        raise argparse.ArgumentTypeError("--sizes: positive read counts, comma-separated")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[1_000_000, 4_000_000])
    parser.add_argument(
        "--coding-reads",
        type=int,
        default=20_000,
        help="reads of the coding job, run at the smaller size (0: none)",
    )
    parser.add_argument("--tmp", type=Path, default=None, help="where the inputs go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        cache = root / "cache"
        ensure_demo_models(demo_spec(cache))
        results = []
        for i, reads in enumerate(args.sizes):
            coding = min(args.coding_reads, reads) if i == 0 else 0
            results.append(measure_size(root, cache, reads, coding))
        report(results)


if __name__ == "__main__":
    main()
