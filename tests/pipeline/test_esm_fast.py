"""The fast ESM-2 forward and the vectorised tokenizer against fair-esm's own."""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path
from typing import Any

import esm
import numpy as np
import pytest
import torch
from esm.model.esm2 import ESM2
from esm.rotary_embedding import RotaryEmbedding
from hypothesis import given, settings
from hypothesis import strategies as st

from virnuc.pipeline.esm_embedder import TRUNCATION_SEQ_LENGTH, EsmEmbedder
from virnuc.pipeline.esm_fast import EsmBatchTokenizer, FastEsm2, apply_rotary, rotary_tables
from virnuc.pipeline.tiny_models import build_tiny_esm2

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
# Every one-character token of the alphabet: the 20, the rare/ambiguous X B U Z O, . and -.
ALL_LETTERS = AMINO_ACIDS + "XBUZO.-"
ALPHABET = esm.data.Alphabet.from_architecture("ESM-1b")
# Mixed lengths in one padded batch, up to the 1022 cap (1024 tokens) and past it.
BATCH_LENGTHS = [1, 3, 17, 100, 257, 600, 1021, 1022, 1023, 1100]
SHORTER_BATCH = [1, 17, 257, 1023]  # still reaches position 1023, at a third of the cost
# head_dim of the real ESM-2 models: 8M 16, 35M 24, 150M 32, 650M/3B 64, 15B 128.
HEAD_DIMS = [16, 24, 32, 64, 128]


def random_protein(rng: random.Random, n: int, letters: str = AMINO_ACIDS) -> str:
    return "".join(rng.choices(letters, k=n))


def batch_converter_tokens(proteins: list[str]) -> torch.Tensor:
    converter = ALPHABET.get_batch_converter(truncation_seq_length=TRUNCATION_SEQ_LENGTH)
    return converter([(str(i), p) for i, p in enumerate(proteins)])[2]


def random_esm2(layers: int, embed_dim: int, heads: int, seed: int) -> ESM2:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ESM2(layers, embed_dim, heads, alphabet=ALPHABET, token_dropout=True)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_model(tiny_esm2_path: Path) -> ESM2:
    """The demo checkpoint through fair-esm's own local loader."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        model, _ = esm.pretrained.load_model_and_alphabet_local(str(tiny_esm2_path))
    return model.eval()


@pytest.fixture(scope="module")
def larger_esm2_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Several layers and heads (head_dim 16, as esm2_t6_8M), in the real file format."""
    return build_tiny_esm2(
        tmp_path_factory.mktemp("esm2_larger"),
        name="esm2_t4_test",
        layers=4,
        embed_dim=64,
        heads=4,
        seed=11,
    )


def fair_esm_final(model: ESM2, tokens: torch.Tensor) -> torch.Tensor:
    layer = model.num_layers
    return model(tokens, repr_layers=[layer])["representations"][layer]


def assert_forward_equals_fair_esm(model: ESM2, tokens: torch.Tensor) -> None:
    with torch.inference_mode():
        expected = fair_esm_final(model, tokens)
        got = FastEsm2(model)(tokens)
    assert got.shape == expected.shape
    assert got.dtype == torch.float32
    real = tokens.ne(ALPHABET.padding_idx)  # what anything downstream reads
    assert (got - expected)[real].abs().max().item() <= 1e-5


# --- fp32: the fast forward equals fair-esm's -------------------------------------------


def test_fast_fp32_equals_fair_esm_on_the_demo_model(tiny_model: ESM2) -> None:
    rng = random.Random(0)
    tokens = batch_converter_tokens([random_protein(rng, n) for n in BATCH_LENGTHS])
    assert_forward_equals_fair_esm(tiny_model, tokens)


@pytest.mark.parametrize(
    ("layers", "embed_dim", "heads"),
    [(4, 64, 4), (3, 96, 8), (2, 80, 5)],  # head_dim 16, 12, 16
)
def test_fast_fp32_equals_fair_esm_with_several_heads_and_layers(
    layers: int, embed_dim: int, heads: int
) -> None:
    model = random_esm2(layers, embed_dim, heads, seed=layers)
    rng = random.Random(layers)
    proteins = [random_protein(rng, n, ALL_LETTERS) for n in SHORTER_BATCH]
    rng.shuffle(proteins)
    assert_forward_equals_fair_esm(model, batch_converter_tokens(proteins))


def test_fast_fp32_equals_fair_esm_without_padding_and_with_mask_tokens() -> None:
    model = random_esm2(3, 64, 4, seed=5)
    rng = random.Random(5)
    unpadded = batch_converter_tokens([random_protein(rng, 300) for _ in range(3)])
    assert not unpadded.eq(ALPHABET.padding_idx).any()
    assert_forward_equals_fair_esm(model, unpadded)
    # Token dropout's rescaling depends on the share of <mask> tokens in each row.
    masked = batch_converter_tokens([random_protein(rng, n) for n in (40, 200, 500)])
    for row, count in enumerate((1, 20, 0)):
        masked[row, 1 : 1 + count] = ALPHABET.mask_idx
    assert_forward_equals_fair_esm(model, masked)


def test_embedder_fast_equals_embedder_fair_esm_forward(larger_esm2_path: Path) -> None:
    rng = random.Random(2)
    proteins = [random_protein(rng, n) for n in [*SHORTER_BATCH, 2, 100, 600, 1100]]
    fast = EsmEmbedder.load(larger_esm2_path).embed(proteins)
    fair = EsmEmbedder.load(larger_esm2_path, fast=False).embed(proteins)
    assert fast.dtype == fair.dtype == np.float32
    assert np.abs(fast - fair).max() <= 1e-5


def test_fast_forward_holds_no_copy_of_the_weights(tiny_model: ESM2) -> None:
    fast = FastEsm2(tiny_model)
    assert fast.model is tiny_model
    assert not any(isinstance(v, torch.Tensor) for v in vars(fast).values())


def test_models_other_than_esm2_layers_are_refused() -> None:
    model = random_esm2(1, 32, 2, seed=0)
    model.layers[0].self_attn.rot_emb = None
    with pytest.raises(ValueError, match="ESM-2"):
        FastEsm2(model)


# --- bf16: close to fp32, rotary in fp32 -------------------------------------------------


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


@pytest.mark.parametrize("which", ["demo", "larger"])
def test_bf16_embeddings_have_cosine_at_least_0999_to_fp32(
    which: str, tiny_esm2_path: Path, larger_esm2_path: Path
) -> None:
    path = tiny_esm2_path if which == "demo" else larger_esm2_path
    rng = random.Random(3)
    proteins = [random_protein(rng, n) for n in BATCH_LENGTHS]
    half = EsmEmbedder.load(path, half=True)
    assert half.model.embed_tokens.weight.dtype == torch.bfloat16
    bf16 = half.embed(proteins)
    fp32 = EsmEmbedder.load(path).embed(proteins)
    assert bf16.dtype == np.float32
    assert cosines(bf16, fp32).min() >= 0.999


def angle_error(cos: torch.Tensor, sin: torch.Tensor, head_dim: int, length: int) -> float:
    """Largest |angle the table encodes - exact angle| in radians, exact = float64."""
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    exact = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    exact = torch.cat((exact, exact), dim=-1)
    encoded = torch.atan2(sin.double(), cos.double())
    diff = torch.remainder(encoded - exact + math.pi, 2 * math.pi) - math.pi
    return float(diff.abs().max())


def fair_esm_tables(head_dim: int, length: int, dtype: torch.dtype) -> tuple[Any, Any]:
    """fair-esm's own tables, from its RotaryEmbedding cast like a half model casts it."""
    rotary = RotaryEmbedding(head_dim).to(dtype)
    cos, sin = rotary._update_cos_sin_tables(torch.zeros(1, 1, length, head_dim, dtype=dtype), -2)
    return cos[0], sin[0]


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_rotary_angles_are_within_1e6_of_float64_up_to_position_1024(head_dim: int) -> None:
    length = 1025  # positions 0 .. 1024
    cos, sin = rotary_tables(head_dim, length)
    assert cos.dtype == sin.dtype == torch.float32
    assert angle_error(cos, sin, head_dim, length) <= 1e-6
    # The bound can fail: fair-esm's tables in a bf16 model (inv_freq and positions in
    # bf16) miss by tenths of a radian, and even its float32 ones by ~1e-4.
    assert angle_error(*fair_esm_tables(head_dim, length, torch.bfloat16), head_dim, length) > 0.1
    assert angle_error(*fair_esm_tables(head_dim, length, torch.float32), head_dim, length) > 1e-6


def test_rotary_is_applied_in_fp32_and_cast_back_once() -> None:
    head_dim, length = 64, 1024
    x = torch.randn(2, 3, length, head_dim, generator=torch.Generator().manual_seed(0))
    x = x.to(torch.bfloat16)
    cos, sin = rotary_tables(head_dim, length)
    got = apply_rotary(x, cos, sin)
    assert got.dtype == torch.bfloat16
    c64, s64 = (t.double() for t in rotary_tables(head_dim, length))
    x64 = x.double()
    x1, x2 = x64.chunk(2, dim=-1)
    exact = x64 * c64 + torch.cat((-x2, x1), dim=-1) * s64
    # One rounding to bf16 (relative 2^-9), nothing more.
    assert torch.all((got.double() - exact).abs() <= exact.abs() * 2**-8 + 1e-6)


# --- the tokenizer -----------------------------------------------------------------------


def test_tokenizer_equals_batch_converter_on_random_proteins() -> None:
    tokenize = EsmBatchTokenizer(ALPHABET, TRUNCATION_SEQ_LENGTH)
    rng = random.Random(12)
    for _ in range(150):
        letters = rng.choice([AMINO_ACIDS, ALL_LETTERS, "XBUZO"])
        proteins = [
            random_protein(rng, rng.randint(1, 1500), letters) for _ in range(rng.randint(1, 8))
        ]
        got = tokenize(proteins)
        assert got.dtype == torch.int64
        assert torch.equal(got, batch_converter_tokens(proteins))


def test_tokenizer_truncates_at_1022_like_batch_converter() -> None:
    tokenize = EsmBatchTokenizer(ALPHABET, TRUNCATION_SEQ_LENGTH)
    proteins = [random_protein(random.Random(4), n) for n in (1021, 1022, 1023, 1500)]
    tokens = tokenize(proteins)
    assert tokens.shape == (4, 1024)
    assert torch.equal(tokens, batch_converter_tokens(proteins))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(alphabet=ALL_LETTERS + " \tJ*<>maskMASKé", min_size=0, max_size=40)
        | st.sampled_from(["<mask>", "A<mask>C", "<cls>MK<eos>", " M K ", "<unk>", "X"]),
        min_size=1,
        max_size=5,
    )
)
def test_tokenizer_matches_fair_esm_on_odd_strings_or_fails_like_it(proteins: list[str]) -> None:
    tokenize = EsmBatchTokenizer(ALPHABET, TRUNCATION_SEQ_LENGTH)
    try:
        expected = batch_converter_tokens(proteins)
    except Exception as e:  # fair-esm raises KeyError on characters it has no token for
        with pytest.raises(type(e)):
            tokenize(proteins)
        return
    assert torch.equal(tokenize(proteins), expected)
