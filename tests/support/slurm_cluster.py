"""Helpers for tests against a real single-node Slurm, as `.ci/slurm-setup.sh` starts it.

The node is `localhost` (this machine, so files are shared) with two fake GPUs: `--gres=gpu:1`
sets CUDA_VISIBLE_DEVICES. Partitions: `debug` (default) and `down` (DOWN, jobs pend with
reason PartitionDown). There is no accounting (no sacct): ask squeue or `scontrol show job`.
Finished jobs leave squeue after MinJobAge (10 s); KillWait is 5 s.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest

from tests.support.poll import wait_for

__all__ = [
    "needs_slurm",
    "require_slurm",
    "scancel_all",
    "slurm_available",
    "squeue_jobs",
]

SEP = "|"
# %i: job id, ARRAYID_TASK for an array task (ARRAYID_[0-3] while still pending as one).
_FIELDS = {"id": "%i", "state": "%T", "reason": "%r", "node": "%N", "name": "%j"}


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


@functools.cache
def slurm_available() -> str | None:
    """None when Slurm can run jobs here, else why not (cached: asked once a session)."""
    for tool in ("sbatch", "squeue", "sinfo", "scancel"):
        if shutil.which(tool) is None:
            return f"{tool} not found: run .ci/slurm-setup.sh as root"
    try:
        info = _run("sinfo", "-h", "-N", "-o", "%N %t", timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: is slurmctld running? (.ci/slurm-setup.sh)"
    if info.returncode != 0:
        return f"sinfo failed ({info.returncode}): {info.stderr.strip()} (.ci/slurm-setup.sh)"
    states = [line.split()[-1] for line in info.stdout.splitlines() if line.strip()]
    if not any(s.rstrip("*~#!%$@^-") in ("idle", "mix", "alloc") for s in states):
        return f"no usable Slurm node: sinfo says {info.stdout.strip() or 'nothing'}"
    return None


REQUIRE_ENV = "VIRNUC_REQUIRE_SLURM"


def require_slurm() -> None:
    """Skip the test, saying why, when Slurm cannot run jobs here; where the cluster must
    be up (`VIRNUC_REQUIRE_SLURM=1`: CI, after .ci/slurm-setup.sh), fail it instead, so a
    cluster that did not start cannot pass as tests skipped."""
    reason = slurm_available()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1, but Slurm cannot run jobs here: {reason}", pytrace=False)
    pytest.skip(f"needs Slurm: {reason}")


#: For a module's `pytestmark`: its tests get the session fixture `slurm_cluster`
#: (tests/e2e/conftest.py), which runs `require_slurm` before any other fixture.
needs_slurm = pytest.mark.usefixtures("slurm_cluster")


def squeue_jobs(name_prefix: str | None = None) -> list[dict[str, str]]:
    """Jobs squeue shows (pending, running, completing), one dict each: `_FIELDS`' keys.

    Array tasks are listed one by one (`-r`), with ids like `12_0`.
    """
    fmt = SEP.join(_FIELDS.values())
    out = _run("squeue", "-h", "-r", "-o", fmt)
    if out.returncode != 0:
        raise RuntimeError(f"squeue failed: {out.stderr.strip()}")
    jobs = []
    for line in out.stdout.splitlines():
        # the name comes last, so a name holding SEP stays whole
        values = line.split(SEP, len(_FIELDS) - 1)
        job = dict(zip(_FIELDS, values, strict=True))
        if name_prefix is None or job["name"].startswith(name_prefix):
            jobs.append(job)
    return jobs


def scancel_all(name_prefix: str, timeout: float = 30) -> None:
    """Cancel every job whose name starts with `name_prefix`, and wait until squeue drops them."""
    ids = sorted({job["id"].split("_")[0] for job in squeue_jobs(name_prefix)})
    if ids:
        _run("scancel", *ids)
    wait_for(
        lambda: not squeue_jobs(name_prefix),
        timeout,
        f"Slurm jobs named {name_prefix}* to end",
        interval=0.2,
    )
