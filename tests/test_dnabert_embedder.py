"""DNABERT embeddings: loading (local, hub cache, remote code), and fidelity to the original."""

from __future__ import annotations

import json
import random
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertModel

from virnuc.pipeline import dnabert_embedder
from virnuc.pipeline.dnabert_embedder import DnabertEmbedder
from virnuc.pipeline.tiny_models import build_tiny_bert

# Frames run up to 501 nt; include the shortest possible ones and some N.
LENGTHS = [1, 2, 3, 4, 9, 30, 99, 150, 151, 240, 300, 333, 450, 499, 500, 501]


def random_dna(rng: random.Random, n: int) -> str:
    return "".join(rng.choices("ACGT", k=n))


def original_embedding(tokenizer: Any, model: Any, sequence: str) -> np.ndarray:
    """VirNucPro's nucleotide feature, one sequence at a time, as the original computes it."""
    inputs = tokenizer(sequence, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden_states = model(inputs)[0]
    return torch.mean(hidden_states[0], dim=0).numpy()


def reference_embeddings(directory: Path, sequences: list[str]) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModel.from_pretrained(str(directory)).eval()
    return np.stack([original_embedding(tokenizer, model, s) for s in sequences])


def mixed_sequences(seed: int) -> list[str]:
    rng = random.Random(seed)
    sequences = [random_dna(rng, n) for n in LENGTHS]
    sequences.append("ACGTNNNNACGTTGCA" * 20)
    rng.shuffle(sequences)
    return sequences


@pytest.fixture(scope="module")
def embedder(tiny_bert_dir: Path) -> DnabertEmbedder:
    return DnabertEmbedder.load(str(tiny_bert_dir))


@pytest.mark.parametrize("max_tokens", [1, 400, 100_000])
def test_batched_embeddings_equal_the_original_in_input_order(
    tiny_bert_dir: Path, max_tokens: int
) -> None:
    sequences = mixed_sequences(11)
    batched = DnabertEmbedder.load(str(tiny_bert_dir), max_tokens=max_tokens).embed(sequences)
    expected = reference_embeddings(tiny_bert_dir, sequences)
    assert batched.dtype == np.float32
    assert batched.shape == (len(sequences), 32)
    assert np.abs(batched - expected).max() <= 1e-5


def test_special_tokens_are_part_of_the_mean(embedder: DnabertEmbedder) -> None:
    # "A" alone is [CLS] A [SEP]: if the specials were dropped, the mean would be the
    # single token's state; it is not.
    tokenizer = embedder.tokenizer
    assert len(tokenizer("A")["input_ids"]) == 3
    ids = torch.tensor([tokenizer("A")["input_ids"]])
    with torch.no_grad():
        hidden = embedder.model(ids)[0][0]
    np.testing.assert_allclose(embedder.embed(["A"])[0], hidden.mean(0).numpy(), atol=1e-6)
    assert not np.allclose(embedder.embed(["A"])[0], hidden[1].numpy(), atol=1e-3)


def test_empty_input_has_shape_zero_by_dim(embedder: DnabertEmbedder) -> None:
    assert embedder.embed([]).shape == (0, embedder.dim)
    assert embedder.dim == 32


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="directory not found"):
        DnabertEmbedder.load(str(tmp_path / "no-such-model"))


def test_a_file_is_not_a_model_directory(tmp_path: Path) -> None:
    stray = tmp_path / "model.bin"
    stray.write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        DnabertEmbedder.load(str(stray))


def test_uncached_hub_id_without_network_explains(monkeypatch: pytest.MonkeyPatch) -> None:
    real = dnabert_embedder.snapshot_download

    def cache_only(repo_id: str, **kwargs: Any) -> str:
        if kwargs.get("local_files_only"):
            return str(real(repo_id, **kwargs))
        raise OSError("network disabled in tests")

    monkeypatch.setattr(dnabert_embedder, "snapshot_download", cache_only)
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        DnabertEmbedder.load("virnuc-tests/never-cached-model")


def test_builder_is_deterministic(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    first = build_tiny_bert(tmp_path / "a", seed=3)
    second = build_tiny_bert(tmp_path / "b", seed=3)
    other = build_tiny_bert(tmp_path / "c", seed=4)
    a, b, c = (load_file(str(d / "model.safetensors")) for d in (first, second, other))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()


# A stand-in for DNABERT-S's remote code: bert_layers.py binds a Triton kernel when
# `from .flash_attn_triton import ...` works, and its BertModel returns a tuple.
REMOTE_MODEL = """
from transformers import BertModel

try:
    from .flash_attn_triton import flash_attn_qkvpacked_func
except ImportError:
    flash_attn_qkvpacked_func = None


class TupleBertModel(BertModel):
    def forward(self, input_ids, attention_mask=None, **kwargs):
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output
"""
REMOTE_KERNEL = """
import triton  # type: ignore (reportMissingImports)


def flash_attn_qkvpacked_func(*args, **kwargs):
    raise RuntimeError("the Triton kernel was used")
"""


def make_remote_code_model(stock_dir: Path, target: Path) -> Path:
    shutil.copytree(stock_dir, target)
    (target / "bert_layers.py").write_text(REMOTE_MODEL)
    (target / "flash_attn_triton.py").write_text(REMOTE_KERNEL)
    config = json.loads((target / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "bert_layers.TupleBertModel"}
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.fixture
def fake_triton(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Pretend triton is installed, as on a GPU server."""
    module = types.ModuleType("triton")
    monkeypatch.setitem(sys.modules, "triton", module)
    return module


def kernel_of(embedder: DnabertEmbedder) -> Any:
    module = sys.modules[type(embedder.model).__module__]
    return module.flash_attn_qkvpacked_func


def test_remote_code_loads_without_triton_and_matches_the_original(
    tiny_bert_dir: Path, tmp_path: Path, fake_triton: types.ModuleType
) -> None:
    remote_dir = make_remote_code_model(tiny_bert_dir, tmp_path / "remote_no_triton")
    loaded = DnabertEmbedder.load(str(remote_dir), max_tokens=300)
    assert type(loaded.model).__name__ == "TupleBertModel"
    assert kernel_of(loaded) is None
    package = type(loaded.model).__module__.rpartition(".")[0]
    assert f"{package}.flash_attn_triton" not in sys.modules  # the import itself failed
    assert sys.modules["triton"] is fake_triton  # restored after loading
    sequences = mixed_sequences(5)
    expected = reference_embeddings(tiny_bert_dir, sequences)
    assert np.abs(loaded.embed(sequences) - expected).max() <= 1e-5


def test_remote_code_load_leaves_the_auto_registry_alone(
    tiny_bert_dir: Path, tmp_path: Path, fake_triton: types.ModuleType
) -> None:
    remote_dir = make_remote_code_model(tiny_bert_dir, tmp_path / "remote_registry")
    DnabertEmbedder.load(str(remote_dir))
    assert type(AutoModel.from_pretrained(str(tiny_bert_dir))) is BertModel


def test_allow_triton_keeps_the_kernel_and_a_later_load_drops_it(
    tiny_bert_dir: Path, tmp_path: Path, fake_triton: types.ModuleType
) -> None:
    remote_dir = make_remote_code_model(tiny_bert_dir, tmp_path / "remote_with_triton")
    with_triton = DnabertEmbedder.load(str(remote_dir), allow_triton=True)
    assert kernel_of(with_triton) is not None
    # The remote module is cached with its kernel bound; loading again must unbind it.
    without = DnabertEmbedder.load(str(remote_dir))
    assert kernel_of(without) is None
