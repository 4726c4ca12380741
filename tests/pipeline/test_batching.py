"""Token-budget batching: every index once, longest first, each batch within budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from virnuc.pipeline.batching import (
    TokenBudget,
    device_token_budget,
    inference_dtype,
    to_device,
    token_budget_batches,
)


def test_empty_input_gives_no_batches() -> None:
    assert token_budget_batches([], 100) == []


def test_sorted_longest_first_and_cut_by_padded_size() -> None:
    # 10*3 = 30 <= 30, a fourth member would make 40.
    assert token_budget_batches([5, 10, 7, 3, 10], 30) == [[1, 4, 2], [0, 3]]


def test_sequence_longer_than_budget_gets_its_own_batch() -> None:
    assert token_budget_batches([50, 2, 2], 10) == [[0], [1, 2]]


def test_ties_keep_input_order() -> None:
    assert token_budget_batches([4, 4, 4, 4], 8) == [[0, 1], [2, 3]]


def test_rejects_a_budget_below_one() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        token_budget_batches([1], 0)


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=300), max_size=60),
    max_tokens=st.integers(min_value=1, max_value=2000),
)
def test_batches_partition_the_input_within_budget(lengths: list[int], max_tokens: int) -> None:
    batches = token_budget_batches(lengths, max_tokens)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    # Concatenated, the batches are a stable sort by descending length.
    assert flat == sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for batch in batches:
        assert batch
        assert len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= max_tokens


def test_half_precision_is_bfloat16_on_cpu_too() -> None:
    assert inference_dtype(torch.device("cpu"), half=True) == torch.bfloat16
    assert inference_dtype(torch.device("cpu"), half=False) == torch.float32


def fake_device(fits: int):
    """An `embed` that runs out of memory for batches over `fits` padded tokens."""
    lengths: list[int] = []
    tried: list[list[int]] = []

    def embed(batch: list[int]) -> np.ndarray:
        tried.append(batch)
        if max(lengths[i] for i in batch) * len(batch) > fits:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return np.array([[float(i)] for i in batch], np.float32)

    return lengths, tried, embed


def test_a_batch_that_runs_out_of_memory_is_split_and_every_row_is_still_filled() -> None:
    lengths, tried, embed = fake_device(fits=40)
    lengths.extend([10] * 16)
    budget = TokenBudget(160)
    out = np.full((16, 1), -1.0, np.float32)
    budget.fill(lengths, out, embed)
    assert out[:, 0].tolist() == [float(i) for i in range(16)]
    assert budget.max_tokens == 40  # halved twice, and kept for the next call
    assert sum(len(b) for b in tried if len(b) * 10 <= 40) == 16  # each row once
    tried.clear()
    budget.fill(lengths, out, embed)
    assert all(len(b) * 10 <= 40 for b in tried)  # no failed try the second time


def test_a_single_sequence_that_does_not_fit_raises() -> None:
    lengths, _, embed = fake_device(fits=5)
    lengths.extend([10, 10])
    with pytest.raises(torch.OutOfMemoryError):
        TokenBudget(20).fill(lengths, np.zeros((2, 1), np.float32), embed)


def test_the_cpu_budget_is_the_configured_one() -> None:
    assert device_token_budget(torch.device("cpu"), 2560, torch.bfloat16, cpu_budget=2048) == 2048


def test_to_device_on_cpu_is_a_plain_copy_of_the_same_values() -> None:
    tensor = torch.arange(6).reshape(2, 3)
    assert torch.equal(to_device(tensor, torch.device("cpu")), tensor)
