"""virnuc.cpu_share: the cores a process is given, from its affinity, its cgroup quota
and Slurm's count, the smallest winning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from virnuc import cpu_share
from virnuc.cpu_share import cgroup_cpu_limit, positive_int, usable_cpus


def _cgroup_v2(root: Path, proc: Path, path: str, limits: dict[str, str]) -> None:
    """A fake cgroup v2 tree: this process in `path`, `cpu.max` where `limits` says."""
    proc.write_text(f"0::/{path}\n")
    (root / path).mkdir(parents=True, exist_ok=True)
    for where, text in limits.items():
        (root / where / "cpu.max").write_text(text + "\n")


def test_v2_quota_rounds_up_to_whole_cores(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    _cgroup_v2(tmp_path, proc, "job", {"job": "250000 100000"})
    assert cgroup_cpu_limit(tmp_path, proc) == 3


def test_v2_tightest_quota_on_the_path_binds(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    _cgroup_v2(tmp_path, proc, "slice/job", {"slice": "100000 100000", "slice/job": "max 100000"})
    assert cgroup_cpu_limit(tmp_path, proc) == 1


def test_v2_without_quota_is_none(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    _cgroup_v2(tmp_path, proc, "job", {"job": "max 100000"})
    assert cgroup_cpu_limit(tmp_path, proc) is None


def test_v1_quota(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("4:cpu,cpuacct:/job\n")  # no "0::" line: cgroup v1
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path, proc) == 4
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path, proc) is None


def test_unreadable_cgroup_is_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path / "absent", tmp_path / "absent-proc") is None


def test_smallest_limit_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_share, "affinity_cpus", lambda: 16)
    proc = tmp_path / "cgroup"
    _cgroup_v2(tmp_path, proc, "job", {"job": "800000 100000"})
    assert usable_cpus({}, tmp_path, proc) == 8
    assert usable_cpus({"SLURM_CPUS_PER_TASK": "4"}, tmp_path, proc) == 4
    assert usable_cpus({"SLURM_CPUS_PER_TASK": "32"}, tmp_path, proc) == 8
    monkeypatch.setattr(cpu_share, "affinity_cpus", lambda: 2)
    assert usable_cpus({"SLURM_CPUS_PER_TASK": "4"}, tmp_path, proc) == 2


def test_affinity_is_what_sched_getaffinity_says(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    assert usable_cpus({}, absent, absent) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("text", [None, "", "0", "-2", "x", "1.5"])
def test_positive_int_refuses(text: str | None) -> None:
    assert positive_int(text) is None
