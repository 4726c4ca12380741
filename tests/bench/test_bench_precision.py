"""bench/bench_precision.py at tiny shapes prints the bf16 row beside fp32 with every
figure; its CPU check and its classifier calibration do what they say."""

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

from virnuc.pipeline.classifier import MLPClassifier

from bench.agreement import calibrate_classifier
from bench.cpu_bf16 import Bf16Support, bf16_support

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench_precision") / "tiny.json"
    command = [sys.executable, "-m", "bench.bench_precision", "--tiny", "--records", "6"]
    command += ["--warmup-records", "2", "--anchor-seconds", "0.05", "--json", str(out)]
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=150, cwd=REPO, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return report, proc.stdout


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_tiny_run_reports_both_precisions_on_the_same_frames(
    tiny: tuple[dict[str, Any], str],
) -> None:
    report, stdout = tiny
    assert report["frames"] > 0
    for precision in ("fp32", "bf16"):
        run = report["runs"][precision]
        assert _positive(run["wall_s"])
        assert _positive(run["frames_per_s"])
        for stage in ("dnabert", "esm"):
            assert run[stage]["tokens"] > 0
            assert run[stage]["tokens"] == report["runs"]["fp32"][stage]["tokens"]
            assert _positive(run[stage]["tokens_per_s"])
    for ratio in report["speedup_bf16"].values():
        assert _positive(ratio)
    assert set(report["composed_36_layers_s"]) == {"fp32", "bf16"}
    lines = stdout.splitlines()
    assert any(line.startswith("ours ") for line in lines)
    assert any(line.startswith("ours_bf16 ") for line in lines)
    assert "composed for 36 layers" in stdout


@pytest.mark.slow
def test_tiny_run_reports_agreement_and_the_cpu(tiny: tuple[dict[str, Any], str]) -> None:
    report, stdout = tiny
    agree = report["agreement"]
    assert 0 <= agree["max_abs_score_diff"] < 0.1
    assert 0.9 <= agree["frame_label_agreement"] <= 1
    assert 0.9 <= agree["record_call_agreement"] <= 1
    assert 0.99 < agree["cosine"]["protein"]["min"] <= 1 + 1e-9
    assert 0.99 < agree["cosine"]["nucleotide"]["min"] <= 1 + 1e-9
    assert report["cpu"]["native"] == bf16_support().native
    assert report["cpu"]["description"] in stdout
    if report["cpu"]["native"]:  # oneDNN names its bf16 kernel on such a CPU
        assert "bf16" in report["onednn_bf16_linear"] or "amx" in report["onednn_bf16_linear"]


def test_cpu_flags_decide_native_bf16(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Some CPU\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    support = bf16_support(cpuinfo)
    assert support.model == "Some CPU"
    assert support.flags == ("amx_bf16", "amx_tile")
    old = Bf16Support("Old CPU", (), torch_amx=False, torch_avx512_bf16=False, capability="AVX2")
    assert not old.native
    assert "emulated" in old.describe()
    zen4 = Bf16Support("EPYC", ("avx512_bf16",), None, None, "AVX512")
    assert zen4.native
    assert "in hardware" in zen4.describe()


def test_calibration_puts_half_the_frames_on_each_side() -> None:
    rng = np.random.default_rng(0)
    features = (rng.standard_normal((400, 24)) + 5.0).astype(np.float32)
    torch.manual_seed(0)
    classifier = MLPClassifier(24, 16, 2).eval()
    calibrate_classifier(classifier, features)
    with torch.inference_mode():
        logits = classifier(torch.from_numpy(features))
    virus = float((logits[:, 1] > logits[:, 0]).float().mean())
    assert 0.45 <= virus <= 0.55
