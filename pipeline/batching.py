"""Batching helpers shared by the embedders.

Both language models pad every sequence of a batch to the longest one, so the cost of a
batch is ``longest * count`` tokens. Sorting by length and cutting the sorted order by
that product keeps padding small and peak memory bounded, whatever the mix of lengths.
"""

from __future__ import annotations

from collections.abc import Sequence

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
