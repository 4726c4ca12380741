"""Run an iterator one step ahead of its consumer, on a thread of its own.

The predictor cuts its next block of frames (reading records, translating six frames)
while the models score the current one: host work off the device's critical path.
The producer's exceptions reach the consumer in order, where the item would have.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_END = object()
_POLL_S = 0.1  # how often a blocked producer looks whether the consumer went away


def prefetched(items: Iterator[T], depth: int = 1) -> Generator[T, None, None]:
    """Yield what `items` yields, computed up to `depth` items ahead on a thread.

    If the consumer stops early (an exception, or closing this generator), the
    producer stops after its current item and `items` is closed on its thread.
    """
    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    gone = threading.Event()

    def put(item: Any) -> bool:
        while not gone.is_set():
            try:
                ready.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        gone.set()
        thread.join()
