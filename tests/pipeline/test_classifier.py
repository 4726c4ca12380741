"""The classifier loads VirNucPro's whole-module pickles safely and scores like the original."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from virnuc.pipeline.classifier import ClassifierLoadError, MLPClassifier, classify, load_classifier

# The original training script defines the class in __main__ and pickles the whole module.
ORIGINAL_SCRIPT = """
import sys, numpy as np, torch
from torch import nn

class MLPClassifier(nn.Module):
    def __init__(self, input_dim, hidden_dim, num_class):
        super(MLPClassifier, self).__init__()
        self.hidden_layer = nn.Linear(input_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, num_class)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        x = self.hidden_layer(x)
        x = self.bn1(x)
        x = torch.relu(x)
        x = self.dropout(x)
        x = self.output_layer(x)
        return x

torch.manual_seed(3)
model = MLPClassifier(24, 8, 2)
model.train()
model(torch.randn(64, 24))  # moves BatchNorm's running statistics off their defaults
torch.save(model, sys.argv[1])

# The original's prediction: reload the pickle, eval mode, softmax.
reloaded = torch.load(sys.argv[1], weights_only=False)
reloaded.eval()
features = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    np.save(sys.argv[3], torch.softmax(reloaded(features), dim=1).numpy())
"""


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    tmp = tmp_path_factory.mktemp("clf")
    features = np.random.default_rng(0).normal(size=(50, 24)).astype(np.float32)
    np.save(tmp / "x.npy", features)
    script = tmp / "train.py"
    script.write_text(ORIGINAL_SCRIPT)
    pickle = tmp / "300_model.pth"
    subprocess.run([sys.executable, script, pickle, tmp / "x.npy", tmp / "y.npy"], check=True)
    return pickle, features, np.load(tmp / "y.npy")


def test_whole_module_pickle_scores_equal_the_originals_eval_forward(original) -> None:
    pickle, features, expected = original
    model = load_classifier(pickle)
    assert not model.training
    got = classify(model, features)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_plain_state_dict_loads(tmp_path: Path, original) -> None:
    pickle, features, expected = original
    state_path = tmp_path / "state.pth"
    torch.save(load_classifier(pickle).state_dict(), state_path)
    np.testing.assert_allclose(classify(load_classifier(state_path), features), expected, atol=1e-6)


EVIL_SCRIPT = """
import os, sys, torch
class Boom:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
torch.save({"hidden_layer.weight": Boom()}, sys.argv[1])
"""


def test_a_pickle_that_runs_code_is_refused_and_not_run(tmp_path: Path) -> None:
    script = tmp_path / "evil.py"
    script.write_text(EVIL_SCRIPT)
    marker = tmp_path / "pwned"
    subprocess.run([sys.executable, script, tmp_path / "evil.pth", marker], check=True)
    with pytest.raises(ClassifierLoadError, match="loads safely"):
        load_classifier(tmp_path / "evil.pth")
    assert not marker.exists()


def test_wrong_shapes_and_missing_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ClassifierLoadError, match="not found"):
        load_classifier(tmp_path / "absent.pth")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ClassifierLoadError, match="do not fit"):
        load_classifier(tmp_path / "other.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ClassifierLoadError, match="holds a list"):
        load_classifier(tmp_path / "list.pth")


def test_batching_keeps_input_order() -> None:
    torch.manual_seed(0)
    model = MLPClassifier(8, 4, 2).eval()
    features = np.random.default_rng(1).normal(size=(10, 8)).astype(np.float32)
    whole = classify(model, features)
    np.testing.assert_array_equal(
        np.concatenate([classify(model, features[:3]), classify(model, features[3:])]), whole
    )
    np.testing.assert_allclose(classify(model, features, batch_size=3), whole, atol=1e-7)
