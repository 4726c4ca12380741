"""Which models a job uses: a `ModelSpec`, resolved from user options without torch.

A spec names the published models by default; the `demo` profile swaps in tiny random
models of the same architectures, written once to a cache directory in the real file
formats (by `models.ensure_demo_models`) and loaded through the same loaders as the
published weights. This module imports no torch, so the daemon can use it cheaply.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_ESM = "esm2_t36_3B_UR50D"
DEFAULT_DNABERT = "zhihan1996/DNABERT-S"
CHUNK_LENGTHS = (300, 500)
# fp32 reproduces VirNucPro; tf32 lets CUDA matmuls round inputs to 10-bit mantissas;
# bf16 runs the models in bfloat16 (rotary angles and softmax stay fp32). README,
# section Precision, has the measured differences.
PRECISIONS = ("fp32", "tf32", "bf16")
DEFAULT_PRECISION = "fp32"
PROFILES = ("demo",)
# Bump when the demo builders change, so stale cached demo models are not reused.
DEMO_VERSION = "demo-v2"  # v2: DNABERT-S's real architecture (bert_layers.py)
DEMO_SEED = 20250224
DEMO_ESM_NAME = "esm2_t2_demo"


class ModelSpecError(ValueError):
    """Raised when model options are missing, contradictory or point at nothing."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything that decides the numbers: two embedders, a classifier, a chunk
    length, and the precision the models run in."""

    esm: str
    dnabert: str
    classifier: str
    chunk_length: int
    profile: str | None = None
    precision: str = DEFAULT_PRECISION

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def default_cache_dir() -> Path:
    if "VIRNUC_CACHE_DIR" in os.environ:
        return Path(os.environ["VIRNUC_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "virnuc"


def resolve_spec(
    *,
    profile: str | None = None,
    esm: str | None = None,
    dnabert: str | None = None,
    classifier: str | None = None,
    chunk_length: int | None = None,
    precision: str = DEFAULT_PRECISION,
    cache_dir: Path | None = None,
) -> ModelSpec:
    """Turn user options into a complete spec (building the demo models if asked)."""
    if chunk_length is not None and chunk_length not in CHUNK_LENGTHS:
        raise ModelSpecError(f"--chunk-length must be 300 or 500, not {chunk_length}")
    if precision not in PRECISIONS:
        raise ModelSpecError(
            f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}"
        )
    if profile is not None:
        if profile not in PROFILES:
            raise ModelSpecError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
        if esm or dnabert or classifier:
            raise ModelSpecError(
                "--profile demo replaces --esm/--dnabert/--classifier; give one or the other"
            )
        return demo_spec(cache_dir or default_cache_dir(), chunk_length or 300, precision)
    if not classifier:
        raise ModelSpecError(
            "no classifier: pass --classifier 300_model.pth (or 500_model.pth) from VirNucPro, "
            "or --profile demo to try the pipeline with tiny random models"
        )
    classifier = str(Path(classifier).resolve())
    return ModelSpec(
        esm=esm or DEFAULT_ESM,
        dnabert=dnabert or DEFAULT_DNABERT,
        classifier=classifier,
        chunk_length=chunk_length or _chunk_length_from_name(classifier),
        precision=precision,
    )


def _chunk_length_from_name(classifier: str) -> int:
    """VirNucPro names its weights 300_model.pth / 500_model.pth; follow the name."""
    match = re.match(r"(300|500)_", Path(classifier).name)
    return int(match.group(1)) if match else 300


def demo_spec(
    cache_dir: Path, chunk_length: int = 300, precision: str = DEFAULT_PRECISION
) -> ModelSpec:
    """The tiny demo models (built on first load); their predictions mean nothing."""
    root = (cache_dir / DEMO_VERSION).resolve()
    return ModelSpec(
        esm=str(root / f"{DEMO_ESM_NAME}.pt"),
        dnabert=str(root / "dnabert"),
        classifier=str(root / "classifier.pth"),
        chunk_length=chunk_length,
        profile="demo",
        precision=precision,
    )
