"""A CPU worker's torch threads come from the cores it is given, not the machine's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from virnuc.worker.process_setup import cpu_threads

# What a freshly started worker process sets up, reported as JSON; pinned to the cores
# of argv[1] (comma-separated, "" for all) before torch is imported.
_PROBE = """
import json, os, sys
if sys.argv[1]:
    os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(",")})
import torch
from virnuc.worker.process_setup import use_cpu_threads
threads = use_cpu_threads("cpu")
print(json.dumps([threads, torch.get_num_threads(), torch.get_num_interop_threads()]))
"""


def _probe(env: dict[str, str], cpus: set[int] | None = None) -> list[int]:
    """Run `_PROBE` in a new interpreter, pinned to `cpus` from its start."""
    pinned = ",".join(map(str, sorted(cpus or ())))
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, pinned],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    threads: list[int] = json.loads(proc.stdout)
    return threads


def _clean_env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")
    }


def test_worker_under_restricted_affinity_uses_that_many_threads() -> None:
    first = min(os.sched_getaffinity(0))
    assert _probe(_clean_env(), {first}) == [1, 1, 1]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_slurm_count_caps_the_threads() -> None:
    assert _probe({**_clean_env(), "SLURM_CPUS_PER_TASK": "1"}) == [1, 1, 1]


def test_omp_num_threads_overrides() -> None:
    first = min(os.sched_getaffinity(0))
    assert _probe({**_clean_env(), "OMP_NUM_THREADS": "3"}, {first}) == [3, 3, 3]


def test_gpu_worker_is_left_alone() -> None:
    from virnuc.worker.process_setup import use_cpu_threads

    assert use_cpu_threads("cuda:0") is None


def test_cpu_threads_rule() -> None:
    assert cpu_threads({"OMP_NUM_THREADS": "5", "SLURM_CPUS_PER_TASK": "2"}) == 5
    assert cpu_threads({"SLURM_CPUS_PER_TASK": "1"}) == 1
    assert cpu_threads({"OMP_NUM_THREADS": "junk", "SLURM_CPUS_PER_TASK": "1"}) == 1
