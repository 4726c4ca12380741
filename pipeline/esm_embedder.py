"""Protein embeddings with ESM-2, exactly as VirNucPro computes them (docs/architecture.md §1.5).

Per protein: the batch converter caps the residues at 1022, the model runs, and the
final layer's representation is averaged over positions ``1 .. min(len, 1022)`` (BOS
and EOS excluded). We batch by token budget for speed; since positions past a
sequence's end are never averaged, padding cannot change its number. By default the
model runs through ``esm_fast.FastEsm2`` (same modules and weights; fp32 rotary, SDPA
attention; equal to fair-esm's forward in fp32) and proteins are tokenized by
``esm_fast.EsmBatchTokenizer`` (equal to fair-esm's batch converter).

Loading never runs arbitrary pickle code: checkpoints are read with
``torch.load(weights_only=True)``, allowing exactly one extra class,
``argparse.Namespace``, which every ESM-2 checkpoint holds its config in.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import urllib.error
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import esm
import esm.pretrained
import numpy as np
import torch
from esm.model.esm2 import ESM2

from virnuc.pipeline.batching import (
    TokenBudget,
    device_token_budget,
    inference_dtype,
    to_device,
)
from virnuc.pipeline.esm_fast import EsmBatchTokenizer, FastEsm2

DEFAULT_ESM_MODEL = "esm2_t36_3B_UR50D"
TRUNCATION_SEQ_LENGTH = 1022
"""Residues kept per protein: 1024 positions minus BOS and EOS, as the original."""
# Padded tokens per batch on CPU, where small batches stay in cache and run ~1.3-1.7x
# faster (bench/bench_pipeline.py); on a GPU the budget follows its free memory
# (batching.device_token_budget).
CPU_MAX_TOKENS = 2048

# fair-esm's download locations (esm/pretrained.py); we fetch into torch hub's cache,
# the same place fair-esm uses, so a cache filled by either tool serves both.
_MODEL_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt"
_REGRESSION_URL = "https://dl.fbaipublicfiles.com/fair-esm/regression/{name}-contact-regression.pt"


def esm2_model_names() -> list[str]:
    """The ESM-2 pretrained names fair-esm knows (``esm2_t6_8M_UR50D`` ...)."""
    return sorted(n for n in dir(esm.pretrained) if n.startswith("esm2_"))


class EsmEmbedder:
    """A loaded ESM-2 model that turns proteins into mean final-layer embeddings."""

    def __init__(
        self,
        model: ESM2,
        alphabet: Any,
        device: torch.device,
        max_tokens: int,
        fast: bool = True,
    ):
        self._model = model
        self._alphabet = alphabet
        self._tokenizer = EsmBatchTokenizer(alphabet, TRUNCATION_SEQ_LENGTH)
        # fast: pipeline/esm_fast.py (fp32 rotary, SDPA); else fair-esm's own forward.
        self._fast = FastEsm2(model) if fast else None
        self._device = device
        self._budget = TokenBudget(max_tokens)  # halved for good after an out-of-memory

    @classmethod
    def load(
        cls,
        source: str | os.PathLike[str] = DEFAULT_ESM_MODEL,
        device: torch.device | str = "cpu",
        half: bool = False,
        max_tokens: int | None = None,
        fast: bool = True,
    ) -> EsmEmbedder:
        """Load ESM-2 from a fair-esm name or a local ``.pt`` checkpoint.

        A name (e.g. ``esm2_t36_3B_UR50D``) is looked up in torch hub's cache
        (``$TORCH_HOME/hub/checkpoints``) and downloaded there if missing, like fair-esm
        does. A path must end in ``.pt``, have a stem starting with ``esm2`` (fair-esm
        picks its loader by that prefix) and have ``<stem>-contact-regression.pt``
        beside it. ``half`` runs the model in bfloat16 (float16 on a GPU without bf16;
        ``batching.inference_dtype``). ``fast`` (the default) runs ``esm_fast.FastEsm2``
        over the same model: rotary in float32 whatever the dtype, SDPA attention;
        ``fast=False`` runs fair-esm's own forward, as the original does.
        """
        model_file, regression_file, name = _resolve_checkpoint(str(source))
        model, alphabet = _load_esm2(model_file, regression_file, name)
        dev = torch.device(device)
        model = model.eval().to(device=dev, dtype=inference_dtype(dev, half))
        dtype = inference_dtype(dev, half)
        budget = max_tokens or device_token_budget(
            dev, int(model.embed_dim), dtype, cpu_budget=CPU_MAX_TOKENS
        )
        return cls(model, alphabet, dev, budget, fast)

    @property
    def max_tokens(self) -> int:
        """Padded tokens per batch now (lowered for good after an out-of-memory)."""
        return self._budget.max_tokens

    @property
    def dim(self) -> int:
        """Embedding width (the model's embed_dim; 2560 for the 3B model)."""
        return int(self._model.embed_dim)

    @property
    def num_layers(self) -> int:
        """Number of transformer layers; the embedding is taken from the last one."""
        return int(self._model.num_layers)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def model(self) -> ESM2:
        """The fair-esm model, in eval mode on ``device``."""
        return self._model

    @property
    def alphabet(self) -> Any:
        """fair-esm's alphabet for the model (tokens, batch converter)."""
        return self._alphabet

    def embed(self, proteins: Sequence[str]) -> np.ndarray:
        """Mean final-layer embedding per protein, float32 ``[len(proteins), dim]``.

        Rows follow the input order, whatever order the batches ran in.
        """
        for i, protein in enumerate(proteins):
            if not protein:
                # The original would average zero positions and produce NaN; upstream
                # discards empty frames, so an empty one here is a caller's bug.
                raise ValueError(f"protein {i} is empty; ESM-2 has nothing to average")
        lengths = [min(len(p), TRUNCATION_SEQ_LENGTH) + 2 for p in proteins]
        # Rows stay on the device until the last batch: one copy to the host per call.
        out = torch.empty((len(proteins), self.dim), dtype=torch.float32, device=self._device)
        with torch.inference_mode():
            self._budget.fill(
                lengths, out, lambda batch: self._embed_batch([proteins[i] for i in batch])
            )
        return out.cpu().numpy()

    def _embed_batch(self, proteins: list[str]) -> torch.Tensor:
        """Run one padded batch and average each row over its own residues only (BOS,
        EOS and padding left out, as the original), on the device."""
        tokens = to_device(self._tokenizer(proteins), self._device)
        if self._fast is not None:
            reps = self._fast(tokens).float()
        else:
            layer = self.num_layers
            reps = self._model(tokens, repr_layers=[layer])["representations"][layer].float()
        kept = torch.tensor([min(len(p), TRUNCATION_SEQ_LENGTH) for p in proteins])
        kept = kept.to(reps.device)
        positions = torch.arange(reps.shape[1], device=reps.device)
        residues = (positions[None, :] >= 1) & (positions[None, :] <= kept[:, None])
        summed = torch.where(residues.unsqueeze(-1), reps, 0.0).sum(dim=1)
        return summed / kept[:, None].to(summed.dtype)


def _resolve_checkpoint(source: str) -> tuple[Path, Path, str]:
    """Map a name or path to (model file, contact-regression file, model name)."""
    if source.endswith(".pt"):  # fair-esm's own rule for "this is a file"
        return _local_files(Path(source).expanduser())
    return _hub_files(source)


def _local_files(model_file: Path) -> tuple[Path, Path, str]:
    if not model_file.is_file():
        raise FileNotFoundError(f"ESM-2 checkpoint not found: {model_file}")
    name = model_file.stem
    if not name.startswith("esm2"):
        raise ValueError(
            f"{model_file}: only ESM-2 checkpoints are supported, and fair-esm recognises "
            f"them by a file name starting with 'esm2' (got {model_file.name!r})"
        )
    regression_file = model_file.with_name(f"{name}-contact-regression.pt")
    if not regression_file.is_file():
        raise FileNotFoundError(
            f"fair-esm needs the contact-regression weights beside the checkpoint, "
            f"but {regression_file} is missing (download it with the model from "
            f"{_REGRESSION_URL.format(name=name)})"
        )
    return model_file, regression_file, name


def _hub_files(name: str) -> tuple[Path, Path, str]:
    known = esm2_model_names()
    if name not in known:
        raise ValueError(
            f"{name!r} is neither a local .pt file nor an ESM-2 model name fair-esm knows; "
            f"only ESM-2 is supported: {', '.join(known)}"
        )
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    model_file = cache / f"{name}.pt"
    regression_file = cache / f"{name}-contact-regression.pt"
    _download_if_missing(_MODEL_URL.format(name=name), model_file)
    _download_if_missing(_REGRESSION_URL.format(name=name), regression_file)
    return model_file, regression_file, name


def _download_if_missing(url: str, dest: Path) -> None:
    """Fetch ``url`` to ``dest`` unless it is cached.

    We download the file ourselves instead of calling fair-esm's hub loader, because that
    goes through ``torch.hub.load_state_dict_from_url``, whose ``weights_only`` defaults to
    False: it would unpickle whatever the server sent.
    """
    if dest.is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(dest), progress=False)
    except (OSError, urllib.error.URLError) as e:
        raise FileNotFoundError(
            f"{dest.name} is not in torch hub's cache ({dest.parent}) and could not be "
            f"downloaded from {url}: {e}. On a machine without internet, copy the file "
            f"there, or pass the path of a local .pt checkpoint instead of a name."
        ) from e


def _safe_torch_load(path: Path) -> Any:
    """``torch.load`` that can only build tensors, containers and argparse.Namespace."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own message ends in advice to trust the file; we only say what it holds.
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise pickle.UnpicklingError(
            f"refusing to load {path}: it holds objects other than tensors and "
            f"argparse.Namespace{what}, so it is not a plain ESM-2 checkpoint"
        ) from e


def _load_esm2(model_file: Path, regression_file: Path, name: str) -> tuple[ESM2, Any]:
    """Build the model with fair-esm's own loader, from data we unpickled safely.

    ``load_model_and_alphabet_core`` is what ``load_model_and_alphabet_local`` calls after
    its two ``torch.load``s; doing those loads here makes ``weights_only=True`` explicit
    instead of depending on torch's default (which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
    can flip). The core loader loads strictly: no missing or unexpected keys.
    """
    model_data = _safe_torch_load(model_file)
    regression_data = _safe_torch_load(regression_file)
    _require_keys(model_file, model_data, "cfg", "model")
    _require_keys(regression_file, regression_data, "model")
    model, alphabet = esm.pretrained.load_model_and_alphabet_core(name, model_data, regression_data)
    if not isinstance(model, ESM2):
        raise ValueError(f"{model_file} is not an ESM-2 model (got {type(model).__name__})")
    return model, alphabet


def _require_keys(path: Path, data: Any, *keys: str) -> None:
    """Fail with the file's name, not a bare KeyError deep inside fair-esm."""
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise ValueError(
            f"{path} is not an ESM-2 checkpoint in fair-esm's format "
            f"(expected a dict with keys {', '.join(keys)})"
        )
