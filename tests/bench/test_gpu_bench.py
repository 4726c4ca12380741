"""bench/gpu_bench.py: its --smoke run prints every number the issue asks for, and its
"original method" is bench_pipeline's, score for score."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from virnuc.pipeline.fasta import read_records
from virnuc.pipeline.predict import DEFAULT_BLOCK_FRAMES

from bench import bench_pipeline, gpu_bench
from bench.synthetic import write_fasta

REPO = Path(__file__).resolve().parents[2]
RUNS = ("original_fp32", "ours_fp32", "ours_tf32", "ours_bf16")
GOALS = (
    "esm_bf16_tokens_per_s",
    "end_to_end_speedup_bf16_vs_original",
    "bf16_vs_fp32_min_cosine",
    "bf16_vs_fp32_label_agreement",
)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gpu_bench") / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_bench.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=out.parent,  # the script finds the checkout itself
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report == json.loads(out.read_text())
    return report


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_smoke_reports_every_run(smoke: dict[str, Any]) -> None:
    assert smoke["complete"] is True
    assert smoke["smoke"] is True
    assert smoke["device"]["type"] == "cpu"
    for key in ("date", "versions", "models", "workload", "elapsed_s"):
        assert smoke[key]
    assert smoke["versions"]["torch"] == torch.__version__
    assert smoke["imported_unwanted_modules"] == []
    assert smoke["models"]["dnabert"]["stand_in"] is False  # DNABERT-S's own code ran
    frames = smoke["workload"]["frames"]
    assert 30 <= frames <= 80
    for name in RUNS:
        run = smoke["runs"][name]
        assert "error" not in run, run
        assert run["frames"] == frames
        assert _positive(run["frames_per_s"])
        assert _positive(run["wall_s"])
        assert run["stages"]["dnabert"]["tokens"] == smoke["workload"]["dnabert_tokens"]
        assert run["stages"]["esm"]["tokens"] == smoke["workload"]["esm_tokens"]
        for stage in ("dnabert", "esm"):
            assert _positive(run["stages"][stage]["tokens_per_s"])
        assert run["peak_gpu_memory_gib"] is None  # CPU
        if name != "original_fp32":
            share = run["host_share"]
            assert 0 < share["mean_per_block"] < 1
            assert 0 < share["overall"] < 1
            assert share["blocks"] >= 2  # smoke blocks are small, so several are cut
    assert smoke["runs"]["ours_bf16"]["settings"]["esm_dtype"] == "bfloat16"
    assert "noop_on_cpu" in smoke["runs"]["ours_tf32"]


@pytest.mark.slow
def test_smoke_agreement_and_goals(smoke: dict[str, Any]) -> None:
    agreement = smoke["agreement"]
    assert set(agreement) == {f"{n}_vs_ours_fp32" for n in RUNS if n != "ours_fp32"}
    for result in agreement.values():
        for stats in result["cosine"].values():
            assert 0 <= stats["min"] <= stats["mean"] <= 1 + 1e-9
        assert 0 <= result["label_agreement"] <= 1
    # Same fp32 numbers, two code paths: only rounding differs.
    original = agreement["original_fp32_vs_ours_fp32"]
    assert original["max_abs_score_diff"] < 1e-4
    assert original["label_agreement"] == 1
    assert agreement["ours_bf16_vs_ours_fp32"]["cosine"]["protein"]["min"] > 0.99
    for name in GOALS:
        entry = smoke["goals"][name]
        assert _positive(entry["value"])
        assert entry["goal"] > 0
        assert entry["ratio"] == pytest.approx(entry["value"] / entry["goal"])
    assert all(_positive(v) for v in smoke["speedup_vs_original"].values())


def test_block_size_is_predictors() -> None:
    assert gpu_bench.BLOCK_FRAMES == DEFAULT_BLOCK_FRAMES


@pytest.mark.slow
def test_original_method_is_bench_pipelines(tmp_path: Path) -> None:
    models = bench_pipeline.build_models(tmp_path)
    fasta = tmp_path / "in.fasta"
    write_fasta(fasta, [700, 1300, 450], seed=5)
    ids, scores = bench_pipeline.original_method(models, fasta)
    records = [(r.id, r.sequence) for r in read_records(fasta)]
    result = gpu_bench.original_method(
        records,
        models.spec.chunk_length,
        models.dnabert.tokenizer,
        models.dnabert.model,
        models.esm.model,
        models.esm.alphabet,
        models.classifier,
        torch.device("cpu"),
    )
    assert result.frame_ids == ids
    assert len(ids) > 3
    np.testing.assert_allclose(result.scores, scores, rtol=0, atol=1e-6)
    assert result.esm_tokens == sum(
        min(len(p), 1022) + 2 for p in (f.protein for f in gpu_bench.all_frames(records, 300))
    )


@pytest.mark.slow
def test_smoke_reports_the_dedup_row(smoke: dict[str, Any]) -> None:
    dedup = smoke["dedup"]
    runs = dedup["runs"]
    for name in ("unique", "duplicated", "duplicated_no_cache"):
        assert "error" not in runs[name], runs[name]
        assert _positive(runs[name]["frames_per_s"])
    assert runs["unique"]["reads"] == runs["duplicated"]["reads"] == 24
    assert runs["unique"]["frames_reused"] == runs["duplicated_no_cache"]["frames_reused"] == 0
    assert runs["duplicated"]["frames"] == runs["duplicated_no_cache"]["frames"]
    assert 0 < runs["duplicated"]["frames_reused"] < runs["duplicated"]["frames"]
    assert dedup["max_abs_score_diff_cache_vs_none"] < 1e-3  # bf16 models, other batches
    goal = dedup["goal"]
    assert goal["ratio"] == pytest.approx(goal["value"] / goal["goal"])
    assert goal["met"] == (goal["value"] <= goal["goal"])
