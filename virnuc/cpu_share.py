"""How many CPU cores this process is given: what sizes CPU workers' thread pools.

``os.cpu_count()`` counts the machine's cores, not the ones a process may use. A worker
can be confined three ways, and each is read here:

* its CPU affinity (``taskset``, ``numactl``, systemd's ``CPUAffinity=``, Slurm's task
  binding): ``os.sched_getaffinity``;
* a cgroup CPU quota (containers, systemd's ``CPUQuota=``, Slurm's cgroup plugin): the
  tightest ``cpu.max`` (cgroup v2) or ``cpu.cfs_quota_us`` (v1) on its path, rounded up
  to whole cores; unreadable or absent means no quota;
* Slurm's ``SLURM_CPUS_PER_TASK`` (``sbatch --cpus-per-task``), which holds even where
  the cluster does not bind tasks to their cores.

The smallest of them wins. Standard library only: virnucd's control plane uses it too,
and never imports torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(
    environ: Mapping[str, str] = os.environ,
    cgroup_root: Path = CGROUP_ROOT,
    proc_cgroup: Path = PROC_CGROUP,
) -> int:
    """The cores this process may use: affinity, cgroup quota and Slurm's count, the
    smallest of them (at least 1)."""
    limits = [affinity_cpus()]
    quota = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    if quota is not None:
        limits.append(quota)
    slurm = positive_int(environ.get("SLURM_CPUS_PER_TASK"))
    if slurm is not None:
        limits.append(slurm)
    return max(1, min(limits))


def affinity_cpus() -> int:
    """The cores this process may be scheduled on (all of them where the platform
    cannot tell)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def cgroup_cpu_limit(
    cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP
) -> int | None:
    """Whole cores the cgroup quota allows (rounded up), or None: no quota, or none
    readable. A quota anywhere above this process's cgroup binds it too."""
    v2 = _cgroup_v2_path(proc_cgroup)
    if v2 is not None:
        quotas = [_v2_quota(cgroup_root / d / "cpu.max") for d in _ancestors(v2)]
    else:  # cgroup v1: the cpu controller's own hierarchy, at its root as a container sees it
        quotas = [_v1_quota(cgroup_root / "cpu" / "cpu.cfs_quota_us")]
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def positive_int(text: str | None) -> int | None:
    """``text`` as a positive integer; None if it is unset or anything else."""
    if text is None or not text.strip().isdigit():
        return None
    value = int(text)
    return value if value > 0 else None


def _cgroup_v2_path(proc_cgroup: Path) -> str | None:
    """This process's cgroup v2 path ("0::/a/b" -> "a/b"), None on cgroup v1."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return line[3:].strip().strip("/")
    return None


def _ancestors(path: str) -> list[str]:
    """ "a/b" -> ["a/b", "a", ""]: the cgroup and every one above it."""
    parts = [p for p in path.split("/") if p]
    return ["/".join(parts[:i]) for i in range(len(parts), -1, -1)]


def _v2_quota(cpu_max: Path) -> int | None:
    """``cpu.max`` holds "QUOTA PERIOD" (microseconds) or "max PERIOD"."""
    try:
        quota, _, period = cpu_max.read_text().strip().partition(" ")
    except OSError:
        return None
    return _cores(quota, period)


def _v1_quota(quota_file: Path) -> int | None:
    try:
        quota = quota_file.read_text().strip()
        period = quota_file.with_name("cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _cores(quota, period)  # a quota of -1: none


def _cores(quota: str, period: str) -> int | None:
    q, p = positive_int(quota), positive_int(period)
    return None if q is None or p is None else max(1, math.ceil(q / p))
