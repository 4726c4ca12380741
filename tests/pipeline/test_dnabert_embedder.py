"""DNABERT embeddings: loading (local, hub cache, no code from model files), and
fidelity to the original.

The tiny model (`build_tiny_bert`) is DNABERT-S's own architecture: its bert_layers.py,
vendored, chosen by the directory's auto_map. bf16 is checked against fp32 on it,
because that code's float32 attention bias is what breaks bf16.
"""

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
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from virnuc.pipeline import dnabert_embedder
from virnuc.pipeline.dnabert_embedder import DnabertEmbedder
from virnuc.pipeline.tiny_models import DNABERT_S_CODE, DNABERT_S_CODE_FILES, build_tiny_bert

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


def unpatched(directory: Path) -> tuple[Any, Any]:
    """Model and tokenizer as our loader builds them (DNABERT-S's code, ``config=`` a
    stock BertConfig as DNABERT's maintainers pass it; triton hidden), float32, without
    the bias cast."""
    model, tokenizer = dnabert_embedder._load_pretrained(directory, allow_triton=False)
    return model.eval(), tokenizer


def reference_embeddings(directory: Path, sequences: list[str]) -> np.ndarray:
    model, tokenizer = unpatched(directory)
    return np.stack([original_embedding(tokenizer, model, s) for s in sequences])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


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


def test_the_tiny_model_is_dnabert_s_own_architecture(
    tiny_bert_dir: Path, embedder: DnabertEmbedder
) -> None:
    model_class = type(embedder.model)
    assert model_class.__name__ == "BertModel"
    assert model_class.__module__ == "virnuc.pipeline.dnabert_s_code.bert_layers"
    assert not isinstance(embedder.model, BertModel)  # not transformers' own BERT
    assert hasattr(embedder.model.encoder, "alibi")
    config = json.loads((tiny_bert_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "bert_layers.BertModel"
    assert config["auto_map"]["AutoConfig"] == "configuration_bert.BertConfig"
    assert (tiny_bert_dir / "pytorch_model.bin").is_file()
    for name in DNABERT_S_CODE_FILES:  # DNABERT-S's files, unchanged
        assert (tiny_bert_dir / name).read_bytes() == (DNABERT_S_CODE / name).read_bytes()


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
    first = build_tiny_bert(tmp_path / "a", seed=3)
    second = build_tiny_bert(tmp_path / "b", seed=3)
    other = build_tiny_bert(tmp_path / "c", seed=4)
    a, b, c = (
        torch.load(d / "pytorch_model.bin", weights_only=True) for d in (first, second, other)
    )
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_runs_and_stays_close_to_fp32(tiny_bert_dir: Path, device: str) -> None:
    sequences = mixed_sequences(23)
    full = DnabertEmbedder.load(str(tiny_bert_dir), device=device).embed(sequences)
    half = DnabertEmbedder.load(str(tiny_bert_dir), device=device, half=True)
    assert next(half.model.parameters()).dtype in (torch.bfloat16, torch.float16)
    reduced = half.embed(sequences)
    assert reduced.dtype == np.float32
    assert np.isfinite(reduced).all()
    assert cosines(reduced, full).min() >= 0.999


def test_bf16_without_the_bias_cast_raises_the_dtype_error(tiny_bert_dir: Path) -> None:
    # What the fix is for: DNABERT-S's code as published, merely cast to bf16.
    model, tokenizer = unpatched(tiny_bert_dir)
    bare = DnabertEmbedder(model.to(torch.bfloat16), tokenizer, torch.device("cpu"), 4096)
    with pytest.raises(RuntimeError, match="dtype"):
        bare.embed(mixed_sequences(2)[:3])


def test_the_bias_cast_changes_nothing_in_fp32(tiny_bert_dir: Path) -> None:
    sequences = mixed_sequences(29)
    patched = DnabertEmbedder.load(str(tiny_bert_dir))
    assert dnabert_embedder._cast_attention_bias(unpatched(tiny_bert_dir)[0]) == 2  # 2 layers
    model, tokenizer = unpatched(tiny_bert_dir)
    bare = DnabertEmbedder(model, tokenizer, torch.device("cpu"), patched.max_tokens)
    assert np.abs(patched.embed(sequences) - bare.embed(sequences)).max() <= 1e-6


def test_bf16_survives_the_alibi_rebuild_past_512_tokens(tiny_bert_dir: Path) -> None:
    # Longer than `alibi_starting_size`, bert_layers.py rebuilds its ALiBi tensor in
    # float32 mid-run; the cast must still apply.
    sequences = ["N" * 600, random_dna(random.Random(3), 80)]
    assert len(DnabertEmbedder.load(str(tiny_bert_dir)).tokenizer(sequences[0])["input_ids"]) > 512
    outputs = []
    for half in (False, True):
        loaded = DnabertEmbedder.load(str(tiny_bert_dir), half=half)
        with pytest.warns(UserWarning, match="Increasing alibi size"):
            outputs.append(loaded.embed(sequences))
    assert cosines(outputs[1], outputs[0]).min() >= 0.999


def test_the_bias_cast_keeps_nothing_after_a_forward(embedder: DnabertEmbedder) -> None:
    embedder.embed(mixed_sequences(31)[:4])
    casters = {
        hook
        for module in embedder.model.modules()
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, dnabert_embedder._BiasCaster)
    }
    assert len(casters) == 1
    caster = casters.pop()
    assert caster._source is None
    assert caster._cast is None


@pytest.fixture(scope="module")
def stock_bert_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain transformers BertModel with the tiny model's tokenizer (no remote code)."""
    target = tmp_path_factory.mktemp("stock_bert")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(tiny_bert_dir / name, target / name)
    vocab = len(json.loads((tiny_bert_dir / "tokenizer.json").read_text())["model"]["vocab"])
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=1024,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(config).save_pretrained(str(target))
    return target


def test_a_stock_bert_still_loads_and_matches_the_original(stock_bert_dir: Path) -> None:
    sequences = mixed_sequences(37)
    loaded = DnabertEmbedder.load(str(stock_bert_dir), max_tokens=500)
    assert type(loaded.model) is BertModel
    tokenizer = AutoTokenizer.from_pretrained(str(stock_bert_dir))
    model = AutoModel.from_pretrained(str(stock_bert_dir)).eval()
    expected = np.stack([original_embedding(tokenizer, model, s) for s in sequences])
    assert np.abs(loaded.embed(sequences) - expected).max() <= 1e-5


def test_the_vendored_class_computes_what_the_directorys_own_code_computes(
    tiny_bert_dir: Path,
) -> None:
    # What loading used to do: import the directory's bert_layers.py as transformers'
    # remote code. Done here on our own, pristine tiny model only, as the reference.
    remote_class = get_class_from_dynamic_module("bert_layers.BertModel", str(tiny_bert_dir))
    assert remote_class.__module__.startswith("transformers_modules.")
    config = BertConfig.from_pretrained(str(tiny_bert_dir))
    remote = remote_class.from_pretrained(str(tiny_bert_dir), config=config).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    sequences = mixed_sequences(41)
    expected = np.stack([original_embedding(tokenizer, remote, s) for s in sequences])
    loaded = DnabertEmbedder.load(str(tiny_bert_dir), max_tokens=300)
    assert np.abs(loaded.embed(sequences) - expected).max() <= 1e-5


# Code a hostile model directory ships: importing it leaves a marker file.
HOSTILE_CODE = """
from pathlib import Path
Path({marker!r}).write_text("ran")
raise RuntimeError("a model directory's code ran")
"""


def test_a_model_directorys_own_code_never_runs(tiny_bert_dir: Path, tmp_path: Path) -> None:
    # Saved exactly as the published model is (auto_map + code files), but its code
    # altered: it must load without running any of it, and embed as before.
    hostile = tmp_path / "hostile"
    shutil.copytree(tiny_bert_dir, hostile)
    marker = tmp_path / "marker"
    for name in DNABERT_S_CODE_FILES:
        (hostile / name).write_text(HOSTILE_CODE.format(marker=str(marker)))
    loaded = DnabertEmbedder.load(str(hostile), max_tokens=300)
    sequences = mixed_sequences(5)
    embedded = loaded.embed(sequences)
    assert not marker.exists()
    assert type(loaded.model).__module__ == "virnuc.pipeline.dnabert_s_code.bert_layers"
    assert not any("hostile" in str(getattr(m, "__file__", "")) for m in list(sys.modules.values()))
    expected = reference_embeddings(tiny_bert_dir, sequences)
    assert np.abs(embedded - expected).max() <= 1e-5


class _Payload:
    """A pickle that runs code when it is loaded (what weights_only must refuse)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "ran"))


@pytest.mark.parametrize("stock", [False, True], ids=["dnabert-s", "stock-bert"])
def test_pickled_weights_that_run_code_are_refused(
    tiny_bert_dir: Path, stock_bert_dir: Path, tmp_path: Path, stock: bool
) -> None:
    model_dir = tmp_path / "pickled"
    shutil.copytree(stock_bert_dir if stock else tiny_bert_dir, model_dir)
    for weights in ("model.safetensors", "pytorch_model.bin"):
        (model_dir / weights).unlink(missing_ok=True)
    marker = tmp_path / "marker"
    torch.save(
        {"embeddings.word_embeddings.weight": _Payload(marker)}, model_dir / "pytorch_model.bin"
    )
    with pytest.raises(dnabert_embedder.ModelCodeRefused, match="holds more than tensors"):
        DnabertEmbedder.load(str(model_dir))
    assert not marker.exists()
    torch.load(model_dir / "pytorch_model.bin", weights_only=False)  # the payload is live
    assert marker.exists()


def test_custom_code_other_than_dnabert_s_is_refused(tiny_bert_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "custom"
    shutil.copytree(tiny_bert_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"]["AutoModel"] = "my_layers.MyModel"
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(dnabert_embedder.ModelCodeRefused, match=r"my_layers\.MyModel"):
        DnabertEmbedder.load(str(model_dir))


def test_a_hub_style_auto_map_selects_the_vendored_class(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "hub_style"
    shutil.copytree(tiny_bert_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"]["AutoModel"] = "zhihan1996/DNABERT-S--bert_layers.BertModel"
    (model_dir / "config.json").write_text(json.dumps(config))
    loaded = DnabertEmbedder.load(str(model_dir))
    assert type(loaded.model).__module__ == "virnuc.pipeline.dnabert_s_code.bert_layers"


# bert_layers.py binds a Triton kernel when `from .flash_attn_triton import ...` works.
# A fake triton module stands for an installed one, and a fake kernel module for the
# vendored flash_attn_triton.py (whose real kernels need a real triton).
VENDORED = "virnuc.pipeline.dnabert_s_code"


@pytest.fixture
def fake_triton(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Pretend triton is installed, as on a GPU server."""
    module = types.ModuleType("triton")
    monkeypatch.setitem(sys.modules, "triton", module)
    return module


@pytest.fixture
def fake_kernel(monkeypatch: pytest.MonkeyPatch, fake_triton: types.ModuleType) -> Any:
    """The Triton kernel module as it imports where triton works."""
    module = types.ModuleType(f"{VENDORED}.flash_attn_triton")

    def flash_attn_qkvpacked_func(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the Triton kernel was used")

    module.flash_attn_qkvpacked_func = flash_attn_qkvpacked_func  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return flash_attn_qkvpacked_func


def kernel_of(embedder: DnabertEmbedder) -> Any:
    module = sys.modules[type(embedder.model).__module__]
    return module.flash_attn_qkvpacked_func


def test_dnabert_s_loads_without_triton_and_matches_the_original(
    tiny_bert_dir: Path, fake_triton: types.ModuleType
) -> None:
    loaded = DnabertEmbedder.load(str(tiny_bert_dir), max_tokens=300)
    assert type(loaded.model).__name__ == "BertModel"
    assert kernel_of(loaded) is None
    assert f"{VENDORED}.flash_attn_triton" not in sys.modules  # never imported
    assert sys.modules["triton"] is fake_triton  # restored after loading
    sequences = mixed_sequences(5)
    expected = reference_embeddings(tiny_bert_dir, sequences)
    assert np.abs(loaded.embed(sequences) - expected).max() <= 1e-5


def test_dnabert_s_load_leaves_the_auto_registry_alone(
    tiny_bert_dir: Path, stock_bert_dir: Path
) -> None:
    DnabertEmbedder.load(str(tiny_bert_dir))
    assert type(AutoModel.from_pretrained(str(stock_bert_dir))) is BertModel


def test_allow_triton_keeps_the_kernel_and_a_later_load_drops_it(
    tiny_bert_dir: Path, fake_kernel: Any
) -> None:
    with_triton = DnabertEmbedder.load(str(tiny_bert_dir), allow_triton=True)
    assert kernel_of(with_triton) is fake_kernel
    # The module is imported once per process; loading again must unbind the kernel.
    without = DnabertEmbedder.load(str(tiny_bert_dir))
    assert kernel_of(without) is None


def test_a_directory_without_one_weights_file_is_named(tiny_bert_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "no_weights"
    shutil.copytree(tiny_bert_dir, model_dir)
    (model_dir / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors or pytorch_model\.bin"):
        DnabertEmbedder.load(str(model_dir))
