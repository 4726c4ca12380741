"""`prefetched`: the same items in order, the producer's errors where they happened,
and a producer that stops (and closes its source) when the consumer goes away."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from virnuc.pipeline.prefetch import prefetched


def test_items_come_in_order_from_another_thread() -> None:
    threads: set[str] = set()

    def source() -> Iterator[int]:
        for i in range(50):
            threads.add(threading.current_thread().name)
            yield i

    assert list(prefetched(source())) == list(range(50))
    assert threads == {"prefetch"}


def test_an_error_of_the_producer_is_raised_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad record 3")

    items = prefetched(source())
    assert [next(items), next(items)] == [1, 2]
    with pytest.raises(ValueError, match="bad record 3"):
        next(items)


def test_a_consumer_that_stops_early_stops_the_producer_and_closes_its_source() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            for i in range(1_000_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    items = prefetched(source(), depth=1)
    assert next(items) == 0
    items.close()  # joins the producer thread
    assert closed.is_set()
    assert len(produced) <= 3  # one handed over, at most one queued, one in hand
