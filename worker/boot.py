"""How virnucd starts a worker: bind its life to the daemon's *before* the heavy imports.

Importing torch and transformers takes seconds; a daemon killed meanwhile must not
leave a half-started worker (or a warm standby) behind. So this module, which imports
only the standard library, sets PR_SET_PDEATHSIG first, checks the parent is still
the daemon that spawned it, and only then imports and runs `virnuc.worker.serve`.

    python -m virnuc.worker.boot [worker options]   (same options as virnuc.worker.serve)

It owns the facts about dying with the daemon (the prctl, the orphan exit code).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
EXIT_ORPHANED = 4  # the daemon is gone


def arm_parent_death() -> None:
    """Ask the kernel to SIGKILL this process when the thread that forked it exits."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def die_with_parent(argv: list[str]) -> bool:
    """Arm the parent-death signal; False if the expected parent is already gone."""
    arm_parent_death()
    if "--parent-pid" in argv:
        expected = argv[argv.index("--parent-pid") + 1]
        return expected.isdigit() and os.getppid() == int(expected)
    return True


def main() -> int:
    if not die_with_parent(sys.argv[1:]):
        return EXIT_ORPHANED
    # Lower priority than virnucd: its control plane must answer while workers compute.
    os.nice(max(0, int(os.environ.get("VIRNUC_WORKER_NICE", "0"))))
    from virnuc.worker.serve import main as worker_main

    return worker_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
