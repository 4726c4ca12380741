"""A worker's CPU priority: below virnucd's, and lowest while it waits as a spare.

Every worker runs `VIRNUC_WORKER_NICE` steps nicer than virnucd, so the control plane
answers while workers compute. A warm spare (`--standby`) imports torch and the models'
code, seconds of CPU, while the slot's worker computes a unit beside it; at nice 19 it
takes only CPU time nobody else wants, and once the daemon hands it the slot it
returns to the worker's priority. Only a root daemon's spare does so: raising a
priority again needs that privilege, and a spare that could not would stay at 19.

A leaf like `exits`: `boot` sets the priority before any heavy import.
"""

from __future__ import annotations

import os

WAITING_NICE = 19  # the lowest priority there is
_worker_nice: int | None = None  # the priority a spare returns to; None: not lowered


def set_worker_priority(standby: bool) -> None:
    """At start: the worker's priority, or a spare's lowest one when it can return."""
    global _worker_nice
    nice = min(WAITING_NICE, os.getpriority(os.PRIO_PROCESS, 0) + _nice_from_env())
    if standby and os.geteuid() == 0:
        _worker_nice = nice
        nice = WAITING_NICE
    os.setpriority(os.PRIO_PROCESS, 0, nice)


def leave_standby() -> None:
    """A spare given its slot: back to the worker's priority (no-op for the others)."""
    global _worker_nice
    if _worker_nice is not None:
        os.setpriority(os.PRIO_PROCESS, 0, _worker_nice)
        _worker_nice = None


def _nice_from_env() -> int:
    return max(0, int(os.environ.get("VIRNUC_WORKER_NICE", "0")))
