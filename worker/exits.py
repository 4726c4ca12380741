"""How a worker process ends: its exit codes, and dying with the daemon.

A leaf: it imports only the standard library and nothing of `virnuc.worker`, so
`boot` can arm the parent-death signal before any heavy import, and every other
worker module can name the exit codes without importing the entry points.
"""

from __future__ import annotations

import ctypes
import signal
import sys

EXIT_OK = 0
EXIT_FATAL = 3  # device unavailable, bad VIRNUC_FAULT, a bug: the supervisor backs off
EXIT_ORPHANED = 4  # the daemon is gone

_PR_SET_PDEATHSIG = 1


def arm_parent_death() -> None:
    """Ask the kernel to SIGKILL this process when the thread that forked it exits."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
