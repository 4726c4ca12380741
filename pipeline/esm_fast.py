"""A faster forward over a loaded fair-esm ESM-2, and a vectorised batch tokenizer.

fair-esm runs its own attention whenever rotary embeddings are on (``bmm`` → softmax →
``bmm``, materialising every ``heads x T x T`` score matrix in fp32), and a model cast to
bfloat16 has its rotary ``inv_freq`` buffer cast too, so the rotary angles (up to ~1023
rad) and even the positions themselves (integers above 256 are not exact in bf16) are
computed in bf16. :class:`FastEsm2` runs the same modules with the same weights (nothing
copied, no new checkpoint format), with two changes:

- rotary: the angles are computed in float64 from ``head_dim`` (fair-esm's own formula),
  cos/sin are stored in float32; q and k are upcast, rotated and cast back;
- attention goes through ``F.scaled_dot_product_attention`` with the key-padding mask
  (fused kernels on GPU; whatever torch picks on CPU).

Everything else (embedding, token-dropout rescaling, zeroed padding, layer norms, FFN,
``emb_layer_norm_after``) is fair-esm's, module for module. In float32 the result equals
fair-esm's final representation to ~1e-6 (tests/pipeline/test_esm_fast.py).

:class:`EsmBatchTokenizer` gives exactly ``BatchConverter``'s tokens, truncation
included, from a 256-entry lookup table over the proteins' bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from esm.model.esm2 import ESM2
from esm.multihead_attention import MultiheadAttention

# fair-esm's token dropout (esm/model/esm2.py): embeddings are scaled by
# (1 - 0.15 * 0.8) / (1 - observed mask ratio), also at inference.
_MASK_RATIO_TRAIN = 0.15 * 0.8
_ROTARY_BASE = 10000.0
_TABLE_ROUND = 256
"""Rotary tables are built for lengths rounded up to this, so they are rarely rebuilt."""


def rotary_tables(head_dim: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fair-esm's rotary cos/sin for positions ``0 .. length-1``, float32 ``[length, head_dim]``.

    Same layout as ``esm.rotary_embedding.RotaryEmbedding`` (``cat(freqs, freqs)``), but
    the inverse frequencies, the angles and their cos/sin are computed in float64 and
    only then rounded to float32, so each entry is within float32's rounding (~6e-8)
    of the exact value; fair-esm's float32 tables are off by up to ~6e-5 at position
    1023, and its bf16 ones by whole tenths of a radian.
    """
    inv_freq = 1.0 / (
        _ROTARY_BASE ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    )
    positions = torch.arange(length, dtype=torch.float64)
    angles = torch.outer(positions, inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (``[..., T, head_dim]``) in float32 and cast back to ``x``'s dtype."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = xf * cos + torch.cat((-x2, x1), dim=-1) * sin
    return rotated.to(x.dtype)


class FastEsm2:
    """fair-esm's ESM-2 forward with fp32 rotary and SDPA attention, over the same model.

    ``FastEsm2(model)(tokens)`` returns what ``model(tokens, repr_layers=[L])
    ["representations"][L]`` returns for the last layer ``L`` (after
    ``emb_layer_norm_after``), ``[B, T, embed_dim]`` in the model's dtype. The model is
    referenced, not copied: move or cast it and this follows. Inference only: call it
    under ``torch.inference_mode()`` (or ``no_grad``) with the model in eval mode.
    """

    def __init__(self, model: ESM2):
        for layer in model.layers:
            attn = layer.self_attn
            if attn.rot_emb is None or attn.bias_k is not None or attn.add_zero_attn:
                raise ValueError("FastEsm2 supports fair-esm ESM-2 layers only")
        self._model = model
        self._head_dim = int(model.layers[0].self_attn.head_dim)
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def model(self) -> ESM2:
        return self._model

    def _rotary(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._tables.get(device)
        if cached is None or cached[0].shape[0] < length:
            size = -(-length // _TABLE_ROUND) * _TABLE_ROUND
            cos, sin = rotary_tables(self._head_dim, size)
            cached = (cos.to(device), sin.to(device))
            self._tables[device] = cached
        return cached[0][:length], cached[1][:length]

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        model = self._model
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, length], got shape {tuple(tokens.shape)}")
        padding = tokens.eq(model.padding_idx)  # [B, T]
        x = model.embed_scale * model.embed_tokens(tokens)
        if model.token_dropout:
            # fair-esm's rescaling, in its order of operations; the ratio stays float32.
            is_mask = tokens.eq(model.mask_idx)
            x = x.masked_fill(is_mask.unsqueeze(-1), 0.0)
            observed = is_mask.sum(-1).float() / (~padding).sum(-1)
            x = (x.float() * (1 - _MASK_RATIO_TRAIN) / (1 - observed)[:, None, None]).to(x.dtype)
        x = x * (1 - padding.unsqueeze(-1).type_as(x))
        # SDPA's boolean mask: True = may attend. None when nothing is padded (as fair-esm),
        # which also lets the GPU use its flash kernel.
        keep = ~padding[:, None, None, :] if bool(padding.any()) else None
        cos, sin = self._rotary(tokens.shape[1], tokens.device)
        for layer in model.layers:
            residual = x
            h = layer.self_attn_layer_norm(x)
            x = residual + _attention(layer.self_attn, h, keep, cos, sin)
            residual = x
            h = layer.final_layer_norm(x)
            x = residual + layer.fc2(F.gelu(layer.fc1(h)))
        return model.emb_layer_norm_after(x)


def _attention(
    attn: MultiheadAttention,
    x: torch.Tensor,
    keep: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
) -> torch.Tensor:
    """fair-esm's self-attention on ``[B, T, E]``: own projections, fp32 rotary, SDPA.

    fair-esm scales q by ``head_dim**-0.5`` before rotating it; rotation is linear, so
    SDPA's default scale (the same ``head_dim**-0.5``) after rotating is the same thing.
    """
    batch, length, embed = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, length, heads, head_dim).transpose(1, 2)

    q = apply_rotary(split(attn.q_proj(x)), cos, sin)
    k = apply_rotary(split(attn.k_proj(x)), cos, sin)
    v = split(attn.v_proj(x))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    return attn.out_proj(out.transpose(1, 2).reshape(batch, length, embed))


class EsmBatchTokenizer:
    """``alphabet.get_batch_converter(truncation)``'s token tensor, vectorised.

    Proteins made only of the alphabet's one-character tokens (the 20 amino acids,
    X B U Z O, ``.`` and ``-``) are looked up through a 256-entry table over their bytes
    and written into the padded batch in one scatter. Anything else (whitespace, an
    unknown letter, ``<mask>`` spelled out, non-ASCII) goes through fair-esm's own
    ``alphabet.encode`` for that protein, so the result, or the error, is fair-esm's.
    """

    def __init__(self, alphabet: Any, truncation_seq_length: int | None):
        self._alphabet = alphabet
        self._truncation = truncation_seq_length
        self._bos = int(bool(alphabet.prepend_bos))
        self._eos = int(bool(alphabet.append_eos))
        table = np.full(256, -1, dtype=np.int64)
        for token, index in alphabet.tok_to_idx.items():
            if len(token) == 1 and token.isascii() and not token.isspace():
                table[ord(token)] = index
        self._table = table

    def __call__(self, proteins: Sequence[str]) -> torch.Tensor:
        """``int64 [len(proteins), longest kept + BOS + EOS]``, padded with ``<pad>``."""
        if not proteins:
            raise ValueError("cannot tokenize an empty batch")
        ids, lengths = self._encode(proteins)
        kept = np.minimum(lengths, self._truncation) if self._truncation else lengths
        alphabet = self._alphabet
        tokens = np.full(
            (len(proteins), int(kept.max()) + self._bos + self._eos),
            alphabet.padding_idx,
            dtype=np.int64,
        )
        starts = np.cumsum(lengths) - lengths
        rows = np.repeat(np.arange(len(proteins)), lengths)
        cols = np.arange(len(ids)) - np.repeat(starts, lengths)
        inside = cols < np.repeat(kept, lengths)
        tokens[rows[inside], cols[inside] + self._bos] = ids[inside]
        if self._bos:
            tokens[:, 0] = alphabet.cls_idx
        if self._eos:
            tokens[np.arange(len(proteins)), kept + self._bos] = alphabet.eos_idx
        return torch.from_numpy(tokens)

    def _encode(self, proteins: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All proteins' token ids concatenated, and each one's count."""
        lengths = np.fromiter((len(p) for p in proteins), dtype=np.int64, count=len(proteins))
        ids = self._lookup("".join(proteins))
        if ids is not None:
            return ids, lengths
        # Rare path: fair-esm's own tokenizer for the proteins the table cannot spell.
        pieces = []
        for i, protein in enumerate(proteins):
            piece = self._lookup(protein)
            if piece is None:
                piece = np.asarray(self._alphabet.encode(protein), dtype=np.int64)
            pieces.append(piece)
            lengths[i] = len(piece)
        return np.concatenate(pieces), lengths

    def _lookup(self, text: str) -> np.ndarray | None:
        """``text``'s ids through the byte table, or None if a character is not in it."""
        if not text.isascii():
            return None
        ids = self._table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
        return ids if bool((ids >= 0).all()) else None
