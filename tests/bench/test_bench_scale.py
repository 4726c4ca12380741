"""bench/bench_scale.py: its no-frame reads really have no frame, and a tiny run prints
every measured row beside its goal."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from virnuc.pipeline.frames import record_frames
from virnuc.pipeline.inputs import detect_format, read_records

from bench.synthetic import NO_FRAME_MOTIF, gzip_copy, no_frame_read, write_fastq

REPO = Path(__file__).resolve().parents[2]
TINY = ("--sizes", "1000,2000", "--coding-reads", "100")
GOAL_ROWS = (
    "planning .gz / bare",
    "last / first unit .gz",
    "gz / plain time",
    "2x reads: time ratio, gz",
    "virnucd at 10^8 records MB",
)
MEASURED_ROWS = (
    "bare decompression MB/s",
    "planning MB/s, gz",
    "unit read s, first/last, gz",
    "s per million reads, plain",
    "virnucd peak RSS MB",
    "worker peak RSS MB",
    "coding reads (plain), 100",
)


@pytest.mark.parametrize("length", [12, 150, 300])
def test_no_frame_reads_keep_no_frame_at_either_chunk_length(length: int) -> None:
    rng = random.Random(length)
    for i in range(200):
        seq = no_frame_read(rng, length)
        assert NO_FRAME_MOTIF in seq
        for chunk_length in (300, 500):
            assert list(record_frames(f"r{i}", seq, chunk_length)) == []


def test_no_frame_reads_longer_than_one_chunk_are_refused() -> None:
    with pytest.raises(ValueError, match="not 301"):
        no_frame_read(random.Random(1), 301)


def test_write_fastq_and_its_gzip_copy_read_back_as_the_same_reads(tmp_path: Path) -> None:
    plain, gz = tmp_path / "r.fastq", tmp_path / "r.fastq.gz"
    write_fastq(plain, 50, seed=1)
    gzip_copy(plain, gz)
    assert detect_format(gz) == "fastq"
    from_plain = [(r.id, r.sequence) for r in read_records(plain)]
    assert from_plain == [(r.id, r.sequence) for r in read_records(gz)]
    assert len({i for i, _ in from_plain}) == 50


@pytest.mark.e2e
def test_a_tiny_run_prints_every_row_beside_its_goal(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_scale", *TINY, "--tmp", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    for name in GOAL_ROWS:
        row = next((line for line in lines if line.lstrip().startswith(name)), None)
        assert row is not None, f"{name!r} missing in:\n{proc.stdout}"
        assert "goal" in row
    for name in MEASURED_ROWS:
        assert any(line.lstrip().startswith(name) for line in lines), (
            f"{name!r} missing:\n{proc.stdout}"
        )
    assert list(tmp_path.iterdir()) == []  # the inputs and state went with the run
