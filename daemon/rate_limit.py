"""A warning that repeats (a stranger's bad messages, a broken key file) logged once
per interval, with a count of what it held back, so a flood cannot fill the logs."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

log = structlog.get_logger()


class RateLimitedWarning:
    """Log a repeated complaint once per key and interval, counting what it suppressed."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, event: str, *, key: str = "", **fields: object) -> None:
        """Log `event` unless it (with the same `key`, e.g. its caller) was logged
        less than `interval` ago."""
        name = f"{event}\0{key}"
        now = self.clock()
        if now - self._last.get(name, -self.interval) < self.interval:
            self._suppressed[name] = self._suppressed.get(name, 0) + 1
            return
        self._last[name] = now
        log.warning(event, suppressed=self._suppressed.pop(name, 0), **fields)
