"""Token-budget batching: every index once, longest first, each batch within budget."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from virnuc.pipeline.batching import inference_dtype, token_budget_batches


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
