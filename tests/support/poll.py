"""Waiting with a deadline: poll a condition until it holds, or fail naming what was awaited.

`wait_for` polls from plain code (a real virnucd, a Slurm queue); `until` polls from a
test's event loop (actors in process), so the loop keeps running what the probe awaits.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: How long an in-process condition may take: far more than any of them needs.
IN_PROCESS_DEADLINE = 10.0


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `probe` until it returns something truthy, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


async def until(probe: Callable[[], Any], what: str) -> Any:
    """Poll `probe` (plain or async) until it returns something truthy, which is returned,
    or fail naming `what` after `IN_PROCESS_DEADLINE` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + IN_PROCESS_DEADLINE
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {IN_PROCESS_DEADLINE} s waiting for {what}")
        await asyncio.sleep(0.01)
