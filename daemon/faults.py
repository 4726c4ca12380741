"""Fault injection for crash tests: SIGKILL the worker at a named moment.

Tests set ``VIRNUC_FAULT`` in a worker's environment to a comma-separated list of
``point`` or ``point@n`` ("the n-th time this point is reached", default 1). When a
listed point is reached for the n-th time the worker SIGKILLs itself, exactly as an
OOM killer or a power cut would stop it. Unset (the normal case), every hook is a
dictionary miss and nothing else.

Points (counted over the process's life, across units):

* ``before_rename`` — a part's temporary file is written and fsynced, not renamed.
* ``after_rename`` — the part is in place and its directory fsynced; no ack sent.
* ``after_ack`` — the part's ``checkpoint`` ack has left the process (the socket is
  flushed and closed first, so the daemon does receive it).
* ``mid_unit`` — after the n-th ``batch_done`` of the process (delivered the same way).
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Mapping

ENV = "VIRNUC_FAULT"
POINTS = frozenset({"before_rename", "after_rename", "after_ack", "mid_unit"})


class FaultSpecError(ValueError):
    """Raised at start-up for a malformed ``VIRNUC_FAULT`` (a test bug, never ignored)."""


class Faults:
    """The armed fault points of this process and how often each was reached."""

    def __init__(self, armed: Mapping[str, int] | None = None):
        self._armed = dict(armed or {})
        self._reached: Counter[str] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Faults:
        return cls(parse(environ.get(ENV, "")))

    def armed(self, point: str) -> bool:
        return point in self._armed

    def hit(self, point: str, before: Callable[[], object] | None = None) -> None:
        """Count a visit to ``point``; on the armed visit run ``before``, then die."""
        if point not in self._armed:
            return
        with self._lock:
            self._reached[point] += 1
            fire = self._reached[point] == self._armed[point]
        if fire:
            if before is not None:
                before()
            os.kill(os.getpid(), signal.SIGKILL)


def parse(text: str) -> dict[str, int]:
    """``"after_ack@2,mid_unit"`` -> ``{"after_ack": 2, "mid_unit": 1}``."""
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        point, _, nth = item.partition("@")
        if point not in POINTS:
            raise FaultSpecError(f"{ENV}: unknown point {point!r} (known: {sorted(POINTS)})")
        if nth and not (nth.isdigit() and int(nth) > 0):
            raise FaultSpecError(f"{ENV}: {item!r}: the count after '@' must be >= 1")
        armed[point] = int(nth or 1)
    return armed
