"""Fault injection for crash tests: SIGKILL the worker at a named moment.

Tests set ``VIRNUC_FAULT`` in a worker's environment to a comma-separated list of
``point`` or ``point@n`` ("the n-th time this point is reached", default 1). When a
listed point is reached for the n-th time the worker SIGKILLs itself, exactly as an
OOM killer would stop it. Just before, it delivers every message it queued before
that moment (`before_kill`), so a test knows exactly what the daemon saw: the crash
happens at the point, not somewhere in the socket's buffers. Unset (the normal
case), every hook is a dictionary miss and nothing else.

Points (counted over the process's life, across units):

* ``before_rename`` — a part's temporary file is written and fsynced, not renamed.
* ``after_rename`` — the part is in place and its directory fsynced; no ack sent.
* ``after_ack`` — the part's ``checkpoint`` ack has been delivered to the daemon.
* ``mid_unit`` — the n-th block of the process is computed (its ``batch_done``, if
  one was due, delivered).
* ``mid_assembly`` — (virnucd itself) the n-th part has been appended to the outputs.
* ``after_publish`` — (virnucd) the outputs are renamed into place; ``done`` is not
  recorded yet.

``VIRNUC_FAULT_MARKER``, a path prefix, makes each point fire once over all processes:
the process that fires creates ``PREFIX.POINT``, and no process fires that point while
the file exists. A restarted
worker (or daemon) inherits the same ``VIRNUC_FAULT`` and must not die the same way
again, or every crash test would end in the give-up policy.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Mapping

ENV = "VIRNUC_FAULT"
MARKER_ENV = "VIRNUC_FAULT_MARKER"
POINTS = frozenset(
    {"before_rename", "after_rename", "after_ack", "mid_unit", "mid_assembly", "after_publish"}
)


class FaultSpecError(ValueError):
    """Raised at start-up for a malformed ``VIRNUC_FAULT`` (a test bug, never ignored)."""


class Faults:
    """The armed fault points of this process and how often each was reached."""

    def __init__(self, armed: Mapping[str, int] | None = None, marker: str | None = None):
        self._armed = dict(armed or {})
        self._marker = marker
        self._reached: Counter[str] = Counter()
        self._lock = threading.Lock()
        #: Run just before the kill; the worker sets it to flush its socket.
        self.before_kill: Callable[[], object] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Faults:
        return cls(parse(environ.get(ENV, "")), environ.get(MARKER_ENV) or None)

    def hit(self, point: str) -> None:
        """Count a visit to ``point``; on the armed visit run ``before_kill``, then die."""
        if point not in self._armed:
            return
        with self._lock:
            self._reached[point] += 1
            fire = self._reached[point] == self._armed[point]
        if fire and self._claim(point):
            if self.before_kill is not None:
                self.before_kill()
            os.kill(os.getpid(), signal.SIGKILL)

    def _claim(self, point: str) -> bool:
        """True if this process may fire: no marker configured, or it created it now."""
        if self._marker is None:
            return True
        try:
            os.close(os.open(f"{self._marker}.{point}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True


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
