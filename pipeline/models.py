"""The loaded, warm models of a `ModelSpec`, and the builder of the demo models."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .classifier import MLPClassifier, load_classifier
from .dnabert_embedder import DnabertEmbedder
from .esm_embedder import EsmEmbedder
from .spec import DEMO_ESM_NAME, DEMO_SEED, ModelSpec, ModelSpecError

_LOADS = itertools.count()  # ModelSet.load_id


def ensure_demo_models(spec: ModelSpec) -> None:
    """Write the demo profile's tiny models where `spec` expects them, once."""
    root = Path(spec.classifier).parent
    if not root.exists():
        _build_demo_models(root)


def _build_demo_models(root: Path) -> None:
    """Build into a temporary sibling, then rename: concurrent builders never see half."""
    from .tiny_models import build_tiny_bert, build_tiny_esm2

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        esm_path = build_tiny_esm2(staging, name=DEMO_ESM_NAME, seed=DEMO_SEED)
        bert_dir = build_tiny_bert(staging / "dnabert", seed=DEMO_SEED)
        esm_dim = EsmEmbedder.load(str(esm_path)).dim
        bert_dim = DnabertEmbedder.load(str(bert_dir)).dim
        torch.manual_seed(DEMO_SEED)
        classifier = MLPClassifier(bert_dim + esm_dim, 16, 2).eval()
        torch.save(classifier.state_dict(), staging / "classifier.pth")
        staging.rename(root)
    except OSError:
        if not root.exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass(slots=True)
class ModelSet:
    """The three models of a spec, loaded once on one device and kept for reuse."""

    spec: ModelSpec
    device: torch.device
    esm: EsmEmbedder
    dnabert: DnabertEmbedder
    classifier: MLPClassifier
    # Unique to this load within the process: rows computed with one load are never
    # reused with another (pipeline.frame_cache), even of the same spec.
    load_id: int = field(default_factory=lambda: next(_LOADS))

    @classmethod
    def load(cls, spec: ModelSpec, device: str | torch.device = "cpu") -> ModelSet:
        """Load the spec's models in its precision (`spec.precision`)."""
        device = torch.device(device)
        if spec.profile == "demo":
            ensure_demo_models(spec)
        use_precision(device, spec.precision)
        half = spec.precision == "bf16"
        esm = EsmEmbedder.load(spec.esm, device=device, half=half)
        dnabert = DnabertEmbedder.load(spec.dnabert, device=device, half=half)
        classifier = load_classifier(spec.classifier, device=device)
        if dnabert.dim + esm.dim != classifier.input_dim:
            raise ModelSpecError(
                f"the classifier expects {classifier.input_dim} features, but DNABERT gives "
                f"{dnabert.dim} and ESM {esm.dim}: these models do not belong together"
            )
        return cls(spec, device, esm, dnabert, classifier)


def use_precision(device: torch.device, precision: str) -> None:
    """TF32 is a process-wide CUDA switch, not a dtype: set it for the models being
    loaded, so a worker that ran a tf32 job runs the next fp32 job in true fp32."""
    if device.type == "cuda":
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
