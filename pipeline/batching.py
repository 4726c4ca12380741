"""Batching helpers shared by the embedders.

Both language models pad every sequence of a batch to the longest one, so the cost of a
batch is ``longest * count`` tokens. Sorting by length and cutting the sorted order by
that product keeps padding small and peak memory bounded, whatever the mix of lengths.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


def token_budget_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Group indices into batches whose padded size stays within ``max_tokens``.

    Indices are ordered by length, longest first (ties keep input order, so the result
    is a pure function of ``lengths``), and cut so that
    ``max(length in batch) * len(batch) <= max_tokens``. Longest first means the first
    batch is the biggest one, so running out of memory shows at once, not at the end.
    A single sequence longer than the budget still gets a batch of its own: the budget
    limits padding, it never drops input.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # Sorted descending, so the batch's first member is its longest.
        longest = lengths[current[0]] if current else lengths[index]
        if current and longest * (len(current) + 1) > max_tokens:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def inference_dtype(device: torch.device, half: bool) -> torch.dtype:
    """The dtype to run a model in on ``device``: float32, or with ``half`` bfloat16
    (it keeps float32's range, so long sequences cannot overflow), float16 only on a
    GPU without bfloat16. Half precision pays off on GPUs; on CPU it is slow, but it
    is how the test suite runs the bf16 code.
    """
    if not half:
        return torch.float32
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


class TokenBudget:
    """Tokens per padded batch, for one embedder; halved for good when a batch runs the
    device out of memory, so a budget that was too bold costs one retry, not a unit."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens

    def fill(
        self,
        lengths: Sequence[int],
        out: torch.Tensor | np.ndarray,
        embed: Callable[[list[int]], Any],
    ) -> None:
        """Set ``out[i]`` for every index, ``embed(batch)`` computing a batch's rows.

        A batch that raises ``torch.OutOfMemoryError`` is cut again under a halved
        budget and retried; only a single sequence that does not fit re-raises.
        """
        pending = deque(token_budget_batches(lengths, self.max_tokens))
        while pending:
            batch = pending.popleft()
            try:
                out[batch] = embed(batch)
            except torch.OutOfMemoryError:
                if len(batch) == 1:
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                longest = max(lengths[i] for i in batch)
                self.max_tokens = max(longest, longest * len(batch) // 2)
                again = token_budget_batches([lengths[i] for i in batch], self.max_tokens)
                pending.extendleft(reversed([[batch[j] for j in part] for part in again]))


ACTIVATION_VALUES_PER_TOKEN = 16  # see device_token_budget


def device_token_budget(
    device: torch.device, width: int, dtype: torch.dtype, cpu_budget: int, cap: int = 1 << 18
) -> int:
    """A batch budget that fits the device: on CUDA, a quarter of the free memory over
    ``ACTIVATION_VALUES_PER_TOKEN * width`` values per token (the transient activations
    of one layer: q, k, v, attention output, the 4x feed-forward, residual and norms),
    between 1024 tokens and ``cap``; on CPU, ``cpu_budget`` (small batches stay in cache).
    `TokenBudget` halves it if it still proves too large.
    """
    if device.type != "cuda":
        return cpu_budget
    free, _ = torch.cuda.mem_get_info(device)
    per_token = ACTIVATION_VALUES_PER_TOKEN * width * torch.finfo(dtype).bits // 8
    return int(min(cap, max(1024, free // 4 // per_token)))


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`; to a GPU from pinned memory without blocking, so the
    copy overlaps what the device still runs (CUDA orders it before later kernels)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
