"""In bf16, every matrix product of ESM-2 and DNABERT-S runs on bf16 operands: the
CPU's bf16 kernels (oneDNN: AMX or AVX-512 BF16) do the work, never an fp32 product
hidden in the loop. What stays fp32 is deliberate and elementwise: ESM-2's rotary
angles (pipeline/esm_fast.py) and the mean over each sequence's positions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from virnuc.pipeline.dnabert_embedder import DnabertEmbedder
from virnuc.pipeline.esm_embedder import EsmEmbedder

# aten's matrix products and attention. Under inference_mode composite ops such as
# linear and matmul reach the dispatcher whole, so they are listed too.
_PRODUCTS = (
    "linear",
    "matmul",
    "mm",
    "addmm",
    "bmm",
    "baddbmm",
    "scaled_dot_product",
    "_scaled_dot_product",
)


class _ProductDtypes(TorchDispatchMode):
    """Counts (product, dtypes of its tensor operands) of every op dispatched."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[tuple[str, tuple[torch.dtype, ...]]] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if name.startswith(_PRODUCTS):
            operands = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
            self.seen[(name, tuple(sorted({str(a.dtype) for a in operands})))] += 1
        return func(*args, **(kwargs or {}))


def _products(run: Any) -> Counter[tuple[str, tuple[torch.dtype, ...]]]:
    with _ProductDtypes() as mode:
        run()
    return mode.seen


def test_esm2_bf16_runs_every_product_in_bf16(tiny_esm2_path: Path) -> None:
    esm = EsmEmbedder.load(str(tiny_esm2_path), half=True)
    seen = _products(lambda: esm.embed(["MKTAYIAKQR", "MLSDEDFKAVFGMTRSAFANLPLWKQQNLKKEKGLF"]))
    assert {name for name, _ in seen} >= {"linear", "scaled_dot_product_attention"}, seen
    assert {dtypes for _, dtypes in seen} == {("torch.bfloat16",)}, seen


def test_dnabert_s_bf16_runs_every_product_in_bf16(tiny_bert_dir: Path) -> None:
    dnabert = DnabertEmbedder.load(str(tiny_bert_dir), half=True)
    seen = _products(lambda: dnabert.embed(["ACGTACGTTAGC" * 8, "TTGACCA" * 3]))
    assert {name for name, _ in seen} >= {"linear", "matmul"}, seen
    assert {dtypes for _, dtypes in seen} == {("torch.bfloat16",)}, seen
