"""Identical frames computed once: a FASTQ with 50 % duplicate reads against one without.

Two FASTQ files of the same size (the same number of 150-base coding reads), one with
every other read a copy of an earlier one (PCR duplicates: an id of their own, the same
bases), one with none; the same models (bench_pipeline's shapes: a 6-layer/320-dim
ESM-2, a small BERT); the same `Predictor` settings a worker uses (blocks of 2048
frames, prefetch). Each input runs with the frame cache (the default) and without it
(`frame_cache_mb=0`, every frame computed), the four runs interleaved `--rounds` times
and the fastest of each kept, so that other load on the machine hits them alike.

Prints the times, the frames reused, and two ratios, measured side by side:

* duplicates / unique, both with the cache: the goal is at most 0.6x, beside its
  physical anchor, the fraction of distinct frames (the work left to do);
* unique with / without the cache: what looking frames up costs when nothing repeats
  (the goal is ~1.00x).

It also checks that the scores with and without the cache agree (within 1e-6).

    .venv/bin/python -m bench.bench_dedup [--reads 2000] [--rounds 3] [--seed 1] [--threads N]

`--threads` sets torch's threads (default: torch's own, one per core); on a machine
whose cores other processes keep busy, 1 gives steadier numbers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from virnuc.pipeline.frame_cache import frame_key
from virnuc.pipeline.frames import record_frames
from virnuc.pipeline.inputs import read_records
from virnuc.pipeline.models import ModelSet
from virnuc.pipeline.outputs import RecordResult
from virnuc.pipeline.predict import Predictor

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
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
        cases = {
            "unique, cache": (unique, None),
            "unique, no cache": (unique, 0),
            "50% duplicates, cache": (duplicated, None),
            "50% duplicates, no cache": (duplicated, 0),
        }
        best = dict.fromkeys(cases, float("inf"))
        results: dict[str, list[RecordResult]] = {}
        for _ in range(args.rounds):
            for name, (reads, cache_mb) in cases.items():
                seconds, results[name] = run(models, reads, cache_mb)
                best[name] = min(best[name], seconds)
        report(best, results, distinct_fraction(results["50% duplicates, cache"], duplicated))


def report(best: dict[str, float], results: dict[str, list[RecordResult]], distinct: float) -> None:
    for name, seconds in best.items():
        frames = sum(len(r.frame_ids) for r in results[name])
        reused = sum(r.frames_reused for r in results[name])
        print(
            f"{name:<26} {seconds:7.2f} s  {frames / seconds:8.1f} frames/s  "
            f"{frames:,} frames, {reused:,} reused"
        )
    for with_cache, without in (("unique, cache", "unique, no cache"),
                                ("50% duplicates, cache", "50% duplicates, no cache")):  # fmt: skip
        got = np.concatenate([r.scores for r in results[with_cache]])
        want = np.concatenate([r.scores for r in results[without]])
        assert np.abs(got - want).max() <= 1e-6, f"{with_cache}: scores differ"
    ratio = best["50% duplicates, cache"] / best["unique, cache"]
    overhead = best["unique, cache"] / best["unique, no cache"]
    print(
        f"50% duplicates / unique (with the cache): {ratio:.2f}x "
        f"(goal <= 0.60x; distinct frames: {distinct:.2f} of the frames)"
    )
    print(f"the cache on unique reads (with / without): {overhead:.2f}x (goal ~1.00x)")


if __name__ == "__main__":
    main()
