"""How virnucd starts a worker: bind its life to the daemon's *before* the heavy imports.

Importing torch and transformers takes seconds; a daemon killed meanwhile must not
leave a half-started worker (or a warm standby) behind. So this module, which imports
only the standard library and `virnuc.worker.exits` (a leaf of the standard library
alone), sets PR_SET_PDEATHSIG first, checks the parent is still the daemon that
spawned it, and only then imports and runs `virnuc.worker.serve`.

    python -m virnuc.worker.boot [worker options]   (same options as virnuc.worker.serve)
"""

from __future__ import annotations

import os
import sys

from virnuc.worker.exits import EXIT_ORPHANED, arm_parent_death


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
    # The parts it writes are virnucd's alone. A local worker inherits virnucd's umask;
    # a Slurm pilot gets the node's unless set here, and may write to a shared disk.
    os.umask(0o077)
    # Lower priority than virnucd: its control plane must answer while workers compute.
    os.nice(max(0, int(os.environ.get("VIRNUC_WORKER_NICE", "0"))))
    from virnuc.worker.serve import main as worker_main

    return worker_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
