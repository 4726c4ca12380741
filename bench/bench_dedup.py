"""Identical frames computed once: a FASTQ with 50 % duplicate reads against one without.

Two FASTQ files of the same size (the same number of 150-base coding reads), one with
every other read a copy of an earlier one (PCR duplicates: an id of their own, the same
bases), one with none; the same models (bench_pipeline's shapes: a 6-layer/320-dim
ESM-2, a small BERT); the same `Predictor` settings a worker uses (blocks of 2048
frames, prefetch). Each input runs with the frame cache (the default) and without it
(`frame_cache_mb=0`, every frame computed), the four runs interleaved `--rounds` times,
in another order each round, so that other load on the machine hits them alike.

Prints the times, the frames reused, and ratios measured side by side (best against
best, and the median of each round's own ratio):

* duplicates / unique, both with the cache: the goal is at most 0.6x, beside its
  physical anchor, the fraction of distinct frames (the work left to do);
* unique with / without the cache: what looking frames up costs when nothing repeats
  (the goal is ~1.00x), beside the reuse path's own work timed alone (keys, distinct
  frames, lookups: microseconds per frame) as a share of a frame's model time.

It also checks that the scores with and without the cache agree (within 1e-6).

    .venv/bin/python -m bench.bench_dedup [--reads 1000] [--rounds 5] [--seed 1] [--threads N]

`--threads` sets torch's threads (default: torch's own, one per core); on a machine
whose cores other processes keep busy, 1 gives steadier numbers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from virnuc.pipeline.frame_cache import FrameCache, frame_key
from virnuc.pipeline.frames import record_frames
from virnuc.pipeline.inputs import read_records
from virnuc.pipeline.models import ModelSet
from virnuc.pipeline.outputs import RecordResult
from virnuc.pipeline.predict import DistinctFrames, Predictor

from .bench_pipeline import build_models
from .synthetic import write_fastq


def run(models: ModelSet, reads: Path, cache_mb: int | None) -> tuple[float, list[RecordResult]]:
    """Seconds and results of one whole input; `cache_mb` None: the default cache."""
    options = {} if cache_mb is None else {"frame_cache_mb": cache_mb}
    predictor = Predictor(models, prefetch=True, **options)
    start = time.perf_counter()
    results = list(predictor.predict(read_records(reads)))
    return time.perf_counter() - start, results


def distinct_fraction(results: list[RecordResult], reads: Path) -> float:
    """Distinct frames over all frames: the share of the work that is left to do."""
    keys = [
        frame_key(frame)
        for record in read_records(reads)
        for frame in record_frames(record.id, record.sequence, 300)
    ]
    assert len(keys) == sum(len(r.frame_ids) for r in results)
    return len(set(keys)) / len(keys)


def bookkeeping_seconds(reads: Path) -> tuple[float, int]:
    """The reuse path's own work over an input's frames, without the models: each
    frame's key, the block's distinct frames, a cache lookup and a row stored."""
    frames = [
        frame
        for record in read_records(reads)
        for frame in record_frames(record.id, record.sequence, 300)
    ]
    cache = FrameCache(1 << 30)
    row = bytes(8)  # a frame's two float32 scores
    start = time.perf_counter()
    for at in range(0, len(frames), 2048):
        distinct = DistinctFrames.of(frames[at : at + 2048])
        for key in distinct.keys:
            if cache.get(key) is None:
                cache.put(key, row)
    return time.perf_counter() - start, len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        unique, duplicated = root / "unique.fq", root / "duplicated.fq"
        write_fastq(unique, args.reads, seed=args.seed, coding=True)
        write_fastq(duplicated, args.reads, seed=args.seed, coding=True, duplicates=0.5)
        assert unique.stat().st_size == duplicated.stat().st_size
        models = build_models(root)
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{args.reads} reads of 150 bases per file ({unique.stat().st_size:,} bytes each)"
        )
        run(models, unique, 0)  # warm-up: first calls allocate and tune kernels
        cases = list(CASES)
        seconds: dict[str, list[float]] = {name: [] for name in cases}
        results: dict[str, list[RecordResult]] = {}
        for round_ in range(args.rounds):  # each round in another order: load hits all alike
            for name in cases[round_ % 4 :] + cases[: round_ % 4]:
                reads, cache_mb = CASES[name]
                took, results[name] = run(models, unique if reads == "unique" else duplicated,
                                          cache_mb)  # fmt: skip
                seconds[name].append(took)
        report(seconds, results, distinct_fraction(results[DUPS], duplicated))
        took, frames = bookkeeping_seconds(unique)
        model_s = statistics.median(seconds[UNIQUE_OFF]) / frames
        print(
            f"the reuse bookkeeping alone (keys, distinct frames, lookups): "
            f"{1e6 * took / frames:.1f} us per frame = {100 * took / frames / model_s:.3f} % "
            f"of a frame's time without the cache ({1e3 * model_s:.1f} ms)"
        )


UNIQUE, UNIQUE_OFF = "unique, cache", "unique, no cache"
DUPS, DUPS_OFF = "50% duplicates, cache", "50% duplicates, no cache"
# name -> (input, frame_cache_mb: None for the default cache, 0 for none)
CASES: dict[str, tuple[str, int | None]] = {
    UNIQUE: ("unique", None),
    UNIQUE_OFF: ("unique", 0),
    DUPS: ("duplicated", None),
    DUPS_OFF: ("duplicated", 0),
}


def report(
    seconds: dict[str, list[float]], results: dict[str, list[RecordResult]], distinct: float
) -> None:
    for name, times in seconds.items():
        frames = sum(len(r.frame_ids) for r in results[name])
        reused = sum(r.frames_reused for r in results[name])
        best = min(times)
        print(
            f"{name:<26} best {best:7.2f} s, median {statistics.median(times):7.2f} s  "
            f"{frames / best:8.1f} frames/s  {frames:,} frames, {reused:,} reused"
        )
    for with_cache, without in ((UNIQUE, UNIQUE_OFF), (DUPS, DUPS_OFF)):
        got = np.concatenate([r.scores for r in results[with_cache]])
        want = np.concatenate([r.scores for r in results[without]])
        assert np.abs(got - want).max() <= 1e-6, f"{with_cache}: scores differ"
    print(
        f"50% duplicates / unique (with the cache): {ratios(seconds, DUPS, UNIQUE)} "
        f"(goal <= 0.60x; distinct frames: {distinct:.2f} of the frames)"
    )
    print(f"50% duplicates with / without the cache: {ratios(seconds, DUPS, DUPS_OFF)}")
    print(
        f"the cache on unique reads (with / without): {ratios(seconds, UNIQUE, UNIQUE_OFF)} "
        "(goal ~1.00x)"
    )


def ratios(seconds: dict[str, list[float]], top: str, bottom: str) -> str:
    """Best against best, and the median of the rounds' own ratios."""
    per_round = [a / b for a, b in zip(seconds[top], seconds[bottom], strict=True)]
    best = min(seconds[top]) / min(seconds[bottom])
    return f"{best:.2f}x best/best, {statistics.median(per_round):.2f}x median of rounds"


if __name__ == "__main__":
    main()
