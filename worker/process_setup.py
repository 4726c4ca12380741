"""Setting up a worker process: its command line, parent, device and signal handlers.

What `virnuc.worker.serve` checks before it says hello: the options, that the daemon
that spawned it is still its parent (`adopt_parent`), that the configured device can
be used (`resolve_device`, never a fallback), and the package versions the hello
reports. A CPU worker's torch threads are sized to the cores it is given
(`use_cpu_threads`). SIGTERM and SIGINT only raise the stop flag.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import platform
import re
import signal
from collections.abc import Mapping

import torch

from virnuc.cpu_share import positive_int, usable_cpus
from virnuc.pipeline.frame_cache import DEFAULT_FRAME_CACHE_MB
from virnuc.worker.exits import arm_parent_death
from virnuc.worker.link import Flags

_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


# --- command line ----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m virnuc.worker.serve", description="virnucd's per-device worker."
    )
    parser.add_argument("--endpoint", required=True, help="the daemon's worker ROUTER")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--worker-id", help="routing id, e.g. w0")
    who.add_argument(
        "--array-worker-ids",
        type=lambda text: text.split(","),
        help="a Slurm array's ids, e.g. s0,s2: this task is the $SLURM_ARRAY_TASK_ID-th",
    )
    parser.add_argument("--device", default="cpu", type=_device, help="cpu, cuda or cuda:N")
    parser.add_argument("--parent-pid", type=int, help="the daemon's pid (exit if not ours)")
    parser.add_argument("--heartbeat-interval", type=_positive, default=1.0, metavar="S")
    parser.add_argument("--checkpoint-seconds", type=_positive, default=300.0, metavar="S")
    parser.add_argument(
        "--block-frames", type=_positive_int, default=2048, help="frames embedded per block"
    )
    parser.add_argument(
        "--frame-cache-mb",
        type=_non_negative_int,
        default=DEFAULT_FRAME_CACHE_MB,
        metavar="MB",
        help="memory for the rows of frames already scored in the job (0: compute every frame)",
    )
    parser.add_argument(
        "--daemon-timeout",
        type=_positive,
        metavar="S",
        help="exit when virnucd is silent this long (a pilot, which has no parent to watch)",
    )
    parser.add_argument(
        "--idle-exit", type=_positive, metavar="S", help="exit after S seconds without a unit"
    )
    parser.add_argument(
        "--standby",
        action="store_true",
        help="import everything, then wait for a line on stdin before connecting",
    )
    args = parser.parse_args(argv)
    if args.array_worker_ids is not None:
        args.worker_id = _array_worker_id(parser, args.array_worker_ids)
    return args


def _array_worker_id(parser: argparse.ArgumentParser, ids: list[str]) -> str:
    """A Slurm array task's routing id: its index in the array picks it."""
    index = os.environ.get("SLURM_ARRAY_TASK_ID", "")
    if not index.isdigit() or int(index) >= len(ids):
        parser.error(
            f"--array-worker-ids needs SLURM_ARRAY_TASK_ID below {len(ids)}, not {index!r}"
        )
    return ids[int(index)]


def _device(text: str) -> str:
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not cpu, cuda or cuda:N")
    return text


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


# --- process guards ----------------------------------------------------------------------


def adopt_parent(expected: int | None) -> int | None:
    """Die with the daemon: PR_SET_PDEATHSIG, then close the race it leaves open.

    Returns the parent pid to watch, or None when the parent is already gone (the
    daemon died between fork and prctl, and we were re-parented). Note: the kernel
    sends the signal when the *thread* that forked us exits, so the daemon must spawn
    workers from a thread that lives as long as it does (its event loop thread).
    """
    arm_parent_death()
    parent = os.getppid()
    return None if expected is not None and parent != expected else parent


def resolve_device(name: str) -> str:
    """The torch device for `--device`; raises DeviceUnavailable, never falls back.

    The supervisor starts a `cuda:N` worker with CUDA_VISIBLE_DEVICES=N, so inside it
    the GPU is `cuda:0`; without that variable the index is used as given.
    """
    if name == "cpu":
        return name
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise DeviceUnavailable(
            f"--device {name}: CUDA is not available in this process "
            f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES={visible}); not falling back to CPU"
        )
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return "cuda:0"
    index = int(name.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise DeviceUnavailable(f"--device {name}: only {torch.cuda.device_count()} GPU(s) seen")
    return name


class DeviceUnavailable(RuntimeError):
    """Raised by `resolve_device` when the configured device cannot be used."""


def cpu_threads(environ: Mapping[str, str] = os.environ) -> int:
    """Threads for a CPU worker: `OMP_NUM_THREADS` when set (virnucd's share of its
    cores for a local worker, or the admin's override), else every core this process
    is given (`cpu_share.usable_cpus`: a Slurm pilot's allocation on its node)."""
    return positive_int(environ.get("OMP_NUM_THREADS")) or usable_cpus(environ)


def use_cpu_threads(device: str, environ: Mapping[str, str] = os.environ) -> int | None:
    """Size torch's intra-op and inter-op pools for a CPU worker; None on a GPU.

    torch's own default is the cores of the process's affinity, blind to a cgroup quota
    and to Slurm's count, so a worker given 4 cores of a 64-core node would run 64
    threads. The inter-op pool can only be sized before its first use: a worker does
    it before loading any model.
    """
    if device != "cpu":
        return None
    threads = cpu_threads(environ)
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already started: keep its size
        torch.set_num_interop_threads(threads)
    return threads


def versions() -> dict[str, str]:
    """Package versions for Hello, read from metadata (no import of torch needed)."""
    found = {"python": platform.python_version()}
    for name in ("virnuc", "torch", "transformers", "fair-esm"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


# --- signals -----------------------------------------------------------------------------


def install_signal_handlers(flags: Flags) -> None:
    """SIGTERM and SIGINT (Ctrl-C reaches the whole process group) only raise a flag."""

    def request_stop(signum: int, frame: object) -> None:
        flags.stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
