"""Nucleotide embeddings with DNABERT-S, exactly as VirNucPro computes them.

See docs/architecture.md §1.4.

The original tokenizes one sequence at a time with the tokenizer's default settings,
runs the model without an attention mask, and averages the last hidden state over
every token the tokenizer produced, ``[CLS]`` and ``[SEP]`` included. We tokenize the
same way, pad on the right, pass an attention mask, and average over the non-padding
positions only, which gives the same number per sequence.

No code from a model directory or hub repository ever runs: it supplies config.json,
tokenizer files and weights only (safetensors, or a pytorch_model.bin read with
``torch.load(weights_only=True)``, which refuses a pickle that would run code). Which
class to build is decided from config.json alone:

* ``auto_map["AutoModel"]`` names ``bert_layers.BertModel`` (the published DNABERT-S,
  and `tiny_models.build_tiny_bert`'s directories): our vendored copy of that code,
  ``virnuc.pipeline.dnabert_s_code.bert_layers.BertModel``, pinned to its source commit.
  The ``bert_layers.py`` a directory ships beside its weights is never imported.
* no ``auto_map``: an architecture transformers implements itself (a plain BERT),
  through ``AutoModel`` with ``trust_remote_code=False``.
* any other ``auto_map``: refused (`ModelCodeRefused`): it asks for code we do not have.

The tokenizer is ``AutoTokenizer`` with ``trust_remote_code=False`` (DNABERT-S's is a
stock fast tokenizer).

DNABERT-S's code cannot run in bfloat16 as published: `_cast_attention_bias` fixes that
from outside, on the loaded model, leaving the vendored files byte-identical.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import snapshot_download
from safetensors.torch import load_file as load_safetensors
from transformers import AutoModel, AutoTokenizer
from transformers.models.bert.configuration_bert import BertConfig

from virnuc.pipeline.batching import (
    TokenBudget,
    device_token_budget,
    inference_dtype,
    to_device,
)

DEFAULT_DNABERT_MODEL = "zhihan1996/DNABERT-S"
# Padded tokens per batch on CPU, where small batches stay in cache and run ~1.3-1.7x
# faster (bench/bench_pipeline.py); a 501-nt frame is ~100-130 BPE tokens. On a GPU the
# budget follows its free memory (batching.device_token_budget).
CPU_MAX_TOKENS = 4096

# The vendored DNABERT-S code, and the auto_map entry that selects it.
_DNABERT_S_CODE = "virnuc.pipeline.dnabert_s_code"
DNABERT_S_AUTO_MODEL = "bert_layers.BertModel"
# The module-level name DNABERT-S's bert_layers.py binds its Triton kernel to (None when
# `from .flash_attn_triton import ...` failed); its attention checks it on every call.
_TRITON_KERNEL_ATTR = "flash_attn_qkvpacked_func"
# bert_layers.py's attention module: its forward(hidden_states, cu_seqlens,
# max_seqlen_in_batch, indices, attn_mask, bias) adds `bias` to the attention scores.
_REMOTE_ATTENTION_CLASS = "BertUnpadSelfAttention"
_BIAS_ARG = 5


class ModelCodeRefused(ValueError):
    """A model directory whose config.json asks for custom code virnuc does not have."""


class DnabertEmbedder:
    """A loaded DNABERT-S (or any BERT-like) model that embeds DNA as mean hidden states."""

    def __init__(self, model: Any, tokenizer: Any, device: torch.device, max_tokens: int):
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self._budget = TokenBudget(max_tokens)  # halved for good after an out-of-memory
        pad_id = tokenizer.pad_token_id
        # The pad id only fills masked positions, so any valid id would do.
        self._pad_id = int(pad_id) if pad_id is not None else 0

    @classmethod
    def load(
        cls,
        source: str | os.PathLike[str] = DEFAULT_DNABERT_MODEL,
        device: torch.device | str = "cpu",
        half: bool = False,
        max_tokens: int | None = None,
        allow_triton: bool = False,
    ) -> DnabertEmbedder:
        """Load tokenizer and model from a local directory or a Hugging Face hub id.

        An existing directory is loaded as is, with no network access. A hub id is
        loaded from the Hugging Face cache when it is there, else downloaded into it.
        ``allow_triton=False`` (the default) keeps DNABERT-S on its PyTorch attention:
        its Triton flash-attention kernel fails on some GPUs, which is why the original
        README says to uninstall triton. ``half`` selects bfloat16 (float16 on a GPU
        without bfloat16), on CPU too.
        """
        directory = _resolve_source(str(source))
        model, tokenizer = _load_pretrained(directory, allow_triton)
        dev = torch.device(device)
        model = model.eval().to(device=dev, dtype=inference_dtype(dev, half))
        _cast_attention_bias(model)
        width = int(model.config.hidden_size)
        budget = max_tokens or device_token_budget(
            dev, width, inference_dtype(dev, half), cpu_budget=CPU_MAX_TOKENS
        )
        return cls(model, tokenizer, dev, budget)

    @property
    def max_tokens(self) -> int:
        """Padded tokens per batch now (lowered for good after an out-of-memory)."""
        return self._budget.max_tokens

    @property
    def dim(self) -> int:
        """Embedding width (the model's hidden size; 768 for DNABERT-S)."""
        return int(self._model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def model(self) -> Any:
        """The loaded model (vendored DNABERT-S or a stock transformers one), in eval mode."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer, used with its default settings."""
        return self._tokenizer

    def embed(self, sequences: Sequence[str]) -> np.ndarray:
        """Mean last hidden state per sequence, float32 ``[len(sequences), dim]``.

        Rows follow the input order, whatever order the batches ran in.
        """
        return self.embed_tokens(self.tokenize(sequences))

    def tokenize(self, sequences: Sequence[str]) -> list[list[int]]:
        """Each sequence's token ids, as the tokenizer gives them to it alone (called on
        the whole list with default settings: no padding, no truncation, specials
        added). Host work only: the predictor runs it ahead, on its prefetch thread."""
        if not sequences:
            return []
        ids: list[list[int]] = self._tokenizer(list(sequences))["input_ids"]
        return ids

    def embed_tokens(self, token_ids: Sequence[list[int]]) -> np.ndarray:
        """`embed` of sequences already tokenized by `tokenize`."""
        if not token_ids:
            return np.empty((0, self.dim), dtype=np.float32)
        lengths = [len(ids) for ids in token_ids]
        # Rows stay on the device until the last batch: one copy to the host per call.
        out = torch.empty((len(token_ids), self.dim), dtype=torch.float32, device=self._device)
        with torch.inference_mode():
            self._budget.fill(
                lengths, out, lambda batch: self._embed_batch([token_ids[i] for i in batch])
            )
        return out.cpu().numpy()

    def _embed_batch(self, token_ids: list[list[int]]) -> torch.Tensor:
        """Right-pad, run, and average each row over its own tokens."""
        longest = max(len(ids) for ids in token_ids)
        input_ids = torch.full((len(token_ids), longest), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(token_ids), longest), dtype=torch.long)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        input_ids, mask = to_device(input_ids, self._device), to_device(mask, self._device)
        # DNABERT-S's BertModel returns a tuple, a stock BertModel a
        # BaseModelOutput; both hold the last hidden state at [0].
        hidden = self._model(input_ids=input_ids, attention_mask=mask)[0].float()
        keep = mask.bool().unsqueeze(-1)
        # where(), not multiply: whatever sits at padded positions (even NaN) is dropped.
        summed = torch.where(keep, hidden, 0.0).sum(dim=1)
        return summed / mask.sum(dim=1, keepdim=True).to(summed.dtype)


def _resolve_source(source: str) -> Path:
    """A local directory to load from: the source itself, or the hub id's cached snapshot."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"DNABERT model source {path} is a file, not a directory")
    # Hub ids are "name" or "owner/name"; anything else can only have meant a path.
    if source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source:
        raise FileNotFoundError(f"DNABERT model directory not found: {path}")
    return _hub_snapshot(source)


def _hub_snapshot(repo_id: str) -> Path:
    """The cached snapshot of ``repo_id``, downloading it first if it is not cached.

    Checking the cache with ``local_files_only`` first means a cached model loads with
    no network access at all, whether or not ``HF_HUB_OFFLINE`` is set.
    """
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (OSError, ValueError):
        pass  # not cached
    try:
        return Path(snapshot_download(repo_id))
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"DNABERT model {repo_id!r} is not in the Hugging Face cache and could not be "
            f"downloaded ({e}). On a machine without internet, run "
            f"`huggingface-cli download {repo_id}` elsewhere and copy the cache "
            f"(HF_HOME), or pass a local model directory."
        ) from e


def _load_pretrained(directory: Path, allow_triton: bool) -> tuple[Any, Any]:
    """Tokenizer and model from ``directory``'s data files; none of its code runs."""
    where = str(directory)
    config = _read_config(directory)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=False)
        weights = _read_weights(directory)
        if config.get("auto_map"):
            model = _dnabert_s_from_pretrained(where, config, weights, allow_triton)
        else:
            model = AutoModel.from_pretrained(where, trust_remote_code=False, state_dict=weights)
    except OSError as e:
        raise FileNotFoundError(f"cannot load a DNABERT model from {where}: {e}") from e
    return model, tokenizer


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The directory's one weights file, read as tensors only (whatever the installed
    transformers would do): safetensors, else pytorch_model.bin via
    ``torch.load(weights_only=True)``, which refuses a pickle that would run code."""
    safetensors_file, pickle_file = directory / "model.safetensors", directory / "pytorch_model.bin"
    if safetensors_file.is_file():
        weights: dict[str, torch.Tensor] = load_safetensors(str(safetensors_file))
        return weights
    if not pickle_file.is_file():
        raise FileNotFoundError(
            f"no model.safetensors or pytorch_model.bin in {directory} (checkpoints split "
            "into shards are not supported)"
        )
    try:
        weights = torch.load(pickle_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelCodeRefused(
            f"{pickle_file} holds more than tensors, which could run code when loaded; "
            f"refused ({e})"
        ) from e
    return weights


def _read_config(directory: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"cannot load a DNABERT model from {directory}: {e}") from e
    return config


def _dnabert_s_from_pretrained(
    where: str, config: dict[str, Any], weights: dict[str, torch.Tensor], allow_triton: bool
) -> Any:
    """The vendored DNABERT-S class with the directory's weights, if config.json's
    ``auto_map`` names that architecture; any other custom code is refused.

    A stock ``BertConfig`` is passed, as DNABERT's maintainers load it (the config class
    of bert_layers.py's models is transformers' own BertConfig; MAGICS-LAB/DNABERT_2
    issue 92): config.json's extra keys, such as ``alibi_starting_size``, ride along.
    """
    reference = str(config["auto_map"].get("AutoModel", ""))
    # A hub snapshot's auto_map may read "owner/name--bert_layers.BertModel".
    if reference.rpartition("--")[2] != DNABERT_S_AUTO_MODEL:
        raise ModelCodeRefused(
            f"{where}/config.json asks for custom model code (auto_map AutoModel = "
            f"{reference or 'none'}); virnuc runs no code from model files, and knows "
            f"only DNABERT-S's ({DNABERT_S_AUTO_MODEL}, vendored) and the architectures "
            "transformers implements (config.json without auto_map)"
        )
    model_class: Any = dnabert_s_model_class(allow_triton)
    bert_config = BertConfig.from_pretrained(where)
    return model_class.from_pretrained(where, config=bert_config, state_dict=weights)


def dnabert_s_model_class(allow_triton: bool = False) -> type:
    """DNABERT-S's ``BertModel`` from the vendored code (``pipeline/dnabert_s_code``).

    Imported once per process with triton hidden; ``allow_triton`` then binds or clears
    its Triton kernel, for every instance of the class (the last load decides). The
    tiny-model builder instantiates it to write weights.
    """
    with _triton_hidden():
        module = importlib.import_module(f"{_DNABERT_S_CODE}.bert_layers")
    _select_triton_kernel(module, allow_triton)
    model_class: type = module.BertModel
    return model_class


@contextmanager
def _triton_hidden() -> Iterator[None]:
    """Make ``import triton`` fail while DNABERT-S's code is imported, then undo that.

    DNABERT-S's bert_layers.py does ``try: from .flash_attn_triton import ...`` and
    switches every attention call to that Triton kernel when the import succeeds; the
    kernel breaks on some GPUs (and with newer triton). A ``None`` entry in
    ``sys.modules`` makes any ``import triton`` raise ImportError, which sends the
    code down its own fallback, the plain PyTorch attention the original used.
    """
    names = [n for n in sys.modules if n == "triton" or n.startswith("triton.")]
    saved = {n: sys.modules[n] for n in names}
    for n in [*names, "triton"]:
        sys.modules[n] = None  # type: ignore[assignment]  # None blocks the import
    try:
        yield
    finally:
        for n in [*names, "triton"]:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


def _select_triton_kernel(module: Any, allow_triton: bool) -> None:
    """Bind bert_layers.py's kernel global to the Triton kernel or to None.

    Its attention reads the global at call time, so this selects the attention of every
    instance. The kernel module is imported only when triton is allowed and importable.
    """
    kernel = None
    if allow_triton:
        try:
            kernels = importlib.import_module(f"{_DNABERT_S_CODE}.flash_attn_triton")
            kernel = kernels.flash_attn_qkvpacked_func
        except ImportError:
            pass  # no triton: the PyTorch attention, as without allow_triton
    setattr(module, _TRITON_KERNEL_ATTR, kernel)


def _cast_attention_bias(model: Any) -> int:
    """Let DNABERT-S's attention run in bfloat16/float16; return how many modules it hooked.

    bert_layers.py builds the attention bias (padding mask + ALiBi) in float32 on purpose
    (``extended_attention_mask.to(dtype=torch.float32)``) and keeps ALiBi as a plain
    tensor attribute, which ``model.to(dtype)`` does not touch. In bf16,
    ``attention_scores + bias`` then promotes to float32 and ``matmul(probs, v)`` raises
    "expected ... same dtype". A forward pre-hook on each attention module hands it the
    bias in the dtype of its activations instead; in float32 it changes nothing.

    It works on the loaded instance, found by class name, so the vendored file stays
    byte-identical to DNABERT-S's. Every layer receives the same bias tensor in one
    forward, so it is cast once per forward and dropped when the forward ends. Stock
    BERT models have no such module and are left alone.
    """
    caster = _BiasCaster()
    hooked = 0
    for module in model.modules():
        if type(module).__name__ == _REMOTE_ATTENTION_CLASS:
            module.register_forward_pre_hook(caster, with_kwargs=True)
            hooked += 1
    if hooked:
        model.register_forward_hook(caster.forget, always_call=True)
    return hooked


class _BiasCaster:
    """The pre-hook of `_cast_attention_bias`, with its one-entry cast cache."""

    def __init__(self) -> None:
        self._source: torch.Tensor | None = None
        self._cast: torch.Tensor | None = None

    def __call__(
        self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        positional = len(args) > _BIAS_ARG
        bias = args[_BIAS_ARG] if positional else kwargs.get("bias")
        if not isinstance(hidden, torch.Tensor) or not isinstance(bias, torch.Tensor):
            return None
        if bias.dtype == hidden.dtype:
            return None
        if self._source is not bias or self._cast is None or self._cast.dtype != hidden.dtype:
            self._source, self._cast = bias, bias.to(hidden.dtype)
        if positional:
            return (*args[:_BIAS_ARG], self._cast, *args[_BIAS_ARG + 1 :]), kwargs
        return args, {**kwargs, "bias": self._cast}

    def forget(self, *_: Any) -> None:
        """Drop the cached bias (a forward hook, run even when the forward raised)."""
        self._source = self._cast = None
