"""When a slot starts its next worker, and when it counts as failing to start.

A worker that lived longer than `healthy_run`, or that said `leaving` (it ended on
purpose: idle, or stopped after its emergency part), is replaced at once and the
backoff starts over. One that died younger waits 0.25 s, 0.5 s, 1 s, ... up to
`restart_backoff_max`. A slot whose workers failed to say hello MAX_START_FAILURES
times in a row is given up on once, loudly (shown `failed`), and still retried at
the backoff cap; a hello ends the streak.

Time comes from `clock`, so the rules are tested without processes or waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_START_FAILURES = 5  # never said hello this many times in a row: give the slot up
FIRST_BACKOFF = 0.25  # seconds before the first quick restart; doubled each time after


@dataclass(frozen=True, slots=True)
class NextStart:
    delay: float  # seconds to wait before starting the next worker
    give_up: bool  # this run made the slot fail to start MAX_START_FAILURES times in a row


class RestartPolicy:
    def __init__(
        self,
        backoff_max: float,
        healthy_run: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.backoff_max = backoff_max
        self.healthy_run = healthy_run
        self._clock = clock
        self._started = clock()
        self._quick_restarts = 0  # deaths in a row of young workers
        self._failures_to_start = 0  # workers in a row that never said hello

    def started(self) -> None:
        """A worker is being started now."""
        self._started = self._clock()

    def ended(self, *, said_hello: bool, leaving: bool) -> NextStart:
        """The worker started last has ended: what happens next."""
        healthy = self._clock() - self._started > self.healthy_run
        self._failures_to_start = 0 if said_hello else self._failures_to_start + 1
        self._quick_restarts = 0 if healthy or leaving else self._quick_restarts + 1
        give_up = self._failures_to_start == MAX_START_FAILURES
        return NextStart(self._delay(), give_up)

    def _delay(self) -> float:
        if not self._quick_restarts:
            return 0.0
        return min(self.backoff_max, FIRST_BACKOFF * 2 ** (self._quick_restarts - 1))
