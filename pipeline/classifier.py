"""VirNucPro's MLP classifier and a loader for its published weights that runs no pickle code.

`300_model.pth` / `500_model.pth` are whole-module pickles of a class `MLPClassifier`
that the training script defined in `__main__`. Loading them with a plain
`torch.load` would execute whatever the pickle names. We load with
`weights_only=True` and allow exactly the classes such a pickle needs: that one name
mapped onto our identical class, and the three torch layers it holds. The loaded
weights are then copied into a fresh module, so nothing of the pickled object's state
survives but its tensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .output_format import LABELS


class ClassifierLoadError(ValueError):
    """Raised by `load_classifier` when a file is not a usable VirNucPro classifier."""


class MLPClassifier(nn.Module):
    """The original's classifier; attribute names match the published pickles.

    Its outputs are the classes of `LABELS`, in that order.
    """

    def __init__(self, input_dim: int = 3328, hidden_dim: int = 512, num_class: int = len(LABELS)):
        super().__init__()
        self.hidden_layer = nn.Linear(input_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, num_class)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hidden_layer(x)
        x = self.bn1(x)
        x = torch.relu(x)
        x = self.dropout(x)
        return self.output_layer(x)

    @property
    def input_dim(self) -> int:
        return int(self.hidden_layer.in_features)


# What a whole-module pickle of the original class may name, and nothing more.
_SAFE_GLOBALS: list[Any] = [
    (MLPClassifier, "__main__.MLPClassifier"),
    MLPClassifier,
    nn.Linear,
    nn.BatchNorm1d,
    nn.Dropout,
]


def load_classifier(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> MLPClassifier:
    """Load a whole-module pickle or a plain state dict into an eval-mode `MLPClassifier`."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierLoadError(f"classifier file not found: {path}")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many types; all mean "not loadable"
        raise ClassifierLoadError(
            f"{path}: not a VirNucPro classifier that loads safely ({exc})"
        ) from exc
    state = _state_dict_of(path, loaded)
    model = _build_from_state(path, state)
    return model.to(device).eval()


def _state_dict_of(path: Path, loaded: object) -> dict[str, torch.Tensor]:
    if isinstance(loaded, nn.Module):
        return loaded.state_dict()
    if isinstance(loaded, dict):
        inner = loaded.get("model_state_dict", loaded.get("state_dict", loaded))
        if isinstance(inner, dict) and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    raise ClassifierLoadError(f"{path}: holds a {type(loaded).__name__}, not a classifier")


def _build_from_state(path: Path, state: dict[str, torch.Tensor]) -> MLPClassifier:
    try:
        hidden_dim, input_dim = state["hidden_layer.weight"].shape
        num_class = state["output_layer.weight"].shape[0]
        model = MLPClassifier(int(input_dim), int(hidden_dim), int(num_class))
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ClassifierLoadError(f"{path}: weights do not fit VirNucPro's MLP ({exc})") from exc
    return model


@torch.inference_mode()
def classify(model: MLPClassifier, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Softmax probabilities [N, 2] (P(others), P(virus)) as float32, in input order."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(features), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(features[start : start + batch_size])).to(device)
        out.append(torch.softmax(model(x.float()), dim=1).float().cpu().numpy())
    if not out:
        return np.zeros((0, 2), dtype=np.float32)
    return np.concatenate(out)
