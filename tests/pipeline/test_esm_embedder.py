"""ESM-2 embeddings: loading through the real loaders, and fidelity to the original."""

from __future__ import annotations

import argparse
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import esm
import numpy as np
import pytest
import torch

from virnuc.pipeline import esm_embedder
from virnuc.pipeline.esm_embedder import EsmEmbedder
from virnuc.pipeline.tiny_models import build_tiny_esm2

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
# 1 residue, ~100, ~170, the cap exactly, one past it, and well past it.
LENGTHS = [1, 2, 7, 33, 100, 101, 170, 171, 250, 1022, 1023, 1100]


def random_protein(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(AMINO_ACIDS, k=n))


def load_checkpoint(path: Path) -> Any:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path)


def original_embedding(model: Any, alphabet: Any, protein: str) -> np.ndarray:
    """VirNucPro's protein feature, one sequence at a time, as the original computes it."""
    batch_converter = alphabet.get_batch_converter(truncation_seq_length=1022)
    _, strs, tokens = batch_converter([("protein", protein)])
    layer = model.num_layers
    with torch.no_grad():
        result = model(tokens, repr_layers=[layer], return_contacts=False)
    truncate_len = min(1022, len(strs[0]))
    rep = result["representations"][layer][0, 1 : truncate_len + 1].mean(0)
    return rep.numpy()


@pytest.fixture(scope="module")
def fair_esm_model(tiny_esm2_path: Path) -> tuple[Any, Any]:
    """The tiny checkpoint through fair-esm's own local loader, as the original loads it."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        model, alphabet = esm.pretrained.load_model_and_alphabet_local(str(tiny_esm2_path))
    return model.eval(), alphabet


@pytest.fixture(scope="module")
def embedder(tiny_esm2_path: Path) -> EsmEmbedder:
    return EsmEmbedder.load(str(tiny_esm2_path))


@pytest.mark.parametrize("max_tokens", [1, 600, 100_000])
def test_batched_embeddings_equal_the_original_in_input_order(
    tiny_esm2_path: Path, fair_esm_model: tuple[Any, Any], max_tokens: int
) -> None:
    rng = random.Random(7)
    proteins = [random_protein(rng, n) for n in LENGTHS]
    rng.shuffle(proteins)
    batched = EsmEmbedder.load(str(tiny_esm2_path), max_tokens=max_tokens).embed(proteins)
    model, alphabet = fair_esm_model
    expected = np.stack([original_embedding(model, alphabet, p) for p in proteins])
    assert batched.dtype == np.float32
    assert batched.shape == (len(proteins), 32)
    assert np.abs(batched - expected).max() <= 1e-5


def test_residues_past_1022_are_ignored(embedder: EsmEmbedder) -> None:
    protein = random_protein(random.Random(1), 1100)
    long, capped = embedder.embed([protein, protein[:1022]])
    np.testing.assert_array_equal(long, capped)


def test_empty_input_has_shape_zero_by_dim(embedder: EsmEmbedder) -> None:
    assert embedder.embed([]).shape == (0, embedder.dim)
    assert embedder.dim == 32
    assert embedder.num_layers == 2


def test_empty_protein_is_refused(embedder: EsmEmbedder) -> None:
    with pytest.raises(ValueError, match="empty"):
        embedder.embed(["MKV", ""])


def test_torch_default_refuses_the_checkpoint_we_load(tiny_esm2_path: Path) -> None:
    # Shows the allow-list is what makes loading work: torch's default refuses Namespace.
    with pytest.raises(pickle.UnpicklingError, match="Namespace"):
        torch.load(tiny_esm2_path)


def test_missing_contact_regression_file_is_named(tiny_esm2_path: Path, tmp_path: Path) -> None:
    lonely = tmp_path / tiny_esm2_path.name
    shutil.copy(tiny_esm2_path, lonely)
    with pytest.raises(FileNotFoundError, match=r"esm2_t2_demo-contact-regression\.pt"):
        EsmEmbedder.load(str(lonely))


def test_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"esm2_nothing\.pt"):
        EsmEmbedder.load(str(tmp_path / "esm2_nothing.pt"))


class _Payload:
    """Pickles as a call to os.mkdir: loading it must not run that call."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (str(self.target),))


def test_checkpoint_with_other_pickled_objects_is_refused_unexecuted(
    tiny_esm2_path: Path, tmp_path: Path
) -> None:
    data = load_checkpoint(tiny_esm2_path)
    marker = tmp_path / "payload-ran"
    data["cfg"]["extra"] = _Payload(marker)
    evil = tmp_path / "esm2_evil.pt"
    torch.save(data, evil)
    shutil.copy(
        tiny_esm2_path.with_name("esm2_t2_demo-contact-regression.pt"),
        tmp_path / "esm2_evil-contact-regression.pt",
    )
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load .*posix\.mkdir"):
        EsmEmbedder.load(str(evil))
    assert not marker.exists()


def test_non_esm2_checkpoint_file_is_refused(tiny_esm2_path: Path, tmp_path: Path) -> None:
    other = tmp_path / "esm1b_t33_650M_UR50S.pt"
    shutil.copy(tiny_esm2_path, other)
    with pytest.raises(ValueError, match="only ESM-2"):
        EsmEmbedder.load(str(other))


@pytest.mark.parametrize("name", ["esm1b_t33_650M_UR50S", "esm2_t99_nonsense"])
def test_unknown_or_non_esm2_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="only ESM-2 is supported"):
        EsmEmbedder.load(name)


def _no_network(url: str, dst: str, *args: Any, **kwargs: Any) -> None:
    raise OSError("network disabled in tests")


def test_name_loads_from_torch_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: EsmEmbedder
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    build_tiny_esm2(tmp_path / "hub" / "checkpoints", name="esm2_t6_8M_UR50D")
    loaded = EsmEmbedder.load("esm2_t6_8M_UR50D")
    protein = random_protein(random.Random(3), 120)
    np.testing.assert_array_equal(loaded.embed([protein]), embedder.embed([protein]))


def test_uncached_name_without_network_says_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    with pytest.raises(FileNotFoundError, match="could not be downloaded") as info:
        EsmEmbedder.load(esm_embedder.DEFAULT_ESM_MODEL)
    assert str(tmp_path / "hub" / "checkpoints") in str(info.value)


def test_builder_is_deterministic(tmp_path: Path) -> None:
    first = build_tiny_esm2(tmp_path / "a", seed=5)
    second = build_tiny_esm2(tmp_path / "b", seed=5)
    other = build_tiny_esm2(tmp_path / "c", seed=6)
    a, b, c = (load_checkpoint(p)["model"] for p in (first, second, other))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert first.with_name("esm2_t2_demo-contact-regression.pt").read_bytes() == (
        second.with_name("esm2_t2_demo-contact-regression.pt").read_bytes()
    )
