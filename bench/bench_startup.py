"""virnucd's start-up time and idle memory, beside what importing torch alone costs.

The control plane (virnucd) imports no model library: torch, transformers, fair-esm,
h5py and matplotlib load only in workers, or in the daemon at the moment a job needs
them (embeddings.h5, the report's figures). This prints, side by side in one run,
median of `--runs`:

1. `python -c 'import virnuc.daemon.main'` against `python -c 'import torch'` (the
   physical anchor: what the daemon would pay again if torch crept back in);
2. virnucd from exec until its control socket answers `ping`, and its VmRSS two
   seconds later, against the VmRSS of a bare Python that imported torch;
3. whether libtorch is mapped into the running daemon (it must not be).

virnucd runs with the Slurm backend, so no worker process starts until a job waits
and only the daemon is measured; sbatch/squeue/scancel are shadowed by commands that
fail, so nothing reaches a cluster.

    .venv/bin/python -m bench.bench_startup [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgpack
import zmq

RSS_SETTLE = 2.0  # seconds after the first ping before VmRSS is read


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def vm_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def torch_rss_mib() -> float:
    """VmRSS of a bare Python that imported torch, read by itself."""
    code = "import torch, pathlib; print(pathlib.Path('/proc/self/status').read_text())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = next(line for line in out.stdout.splitlines() if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def answers_ping(context: zmq.Context, endpoint: str) -> bool:
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send(msgpack.packb({"v": 1, "id": uuid.uuid4().hex, "op": "ping", "args": {}}))
        return bool(sock.poll(200)) and bool(msgpack.unpackb(sock.recv())["ok"])
    finally:
        sock.close()


def no_slurm_commands() -> dict[str, str]:
    """An environment whose sbatch, squeue and scancel fail at once."""
    bin_dir = Path(tempfile.mkdtemp(prefix="no-slurm-"))
    for name in ("sbatch", "squeue", "scancel"):
        path = bin_dir / name
        path.write_text("#!/bin/sh\nexit 1\n")
        path.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_daemon(context: zmq.Context, env: dict[str, str]) -> tuple[float, float, bool]:
    """(seconds from exec to the first ping answered, VmRSS MiB, libtorch mapped)."""
    state = Path(tempfile.mkdtemp(prefix="virnucd-"))
    command = [
        sys.executable, "-m", "virnuc.daemon.main", "--state-dir", str(state),
        "--backend", "slurm", "--slurm-gres", "",
        "--worker-endpoint", f"tcp://127.0.0.1:{free_port()}",
    ]  # fmt: skip
    start = time.perf_counter()
    daemon = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        endpoint = f"ipc://{state}/control.sock"
        deadline = start + 60
        while not ((state / "control.sock").exists() and answers_ping(context, endpoint)):
            if daemon.poll() is not None or time.perf_counter() > deadline:
                raise SystemExit(f"virnucd did not come up (exit {daemon.poll()})")
            time.sleep(0.01)
        started = time.perf_counter() - start
        time.sleep(RSS_SETTLE)
        mapped = "libtorch" in Path(f"/proc/{daemon.pid}/maps").read_text()
        return started, vm_rss_mib(daemon.pid), mapped
    finally:
        daemon.terminate()
        daemon.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    med = statistics.median

    import_daemon = [
        timed([sys.executable, "-c", "import virnuc.daemon.main"]) for _ in range(runs)
    ]
    import_torch = [timed([sys.executable, "-c", "import torch"]) for _ in range(runs)]
    context, env = zmq.Context(), no_slurm_commands()
    daemons = [start_daemon(context, env) for _ in range(runs)]
    torch_rss = [torch_rss_mib() for _ in range(runs)]
    context.term()

    start_up, rss = [d[0] for d in daemons], [d[1] for d in daemons]
    print(f"runs: {runs} (medians)")
    print(f"import virnuc.daemon.main   {med(import_daemon):6.3f} s")
    print(f"import torch (anchor)       {med(import_torch):6.3f} s")
    print(f"virnucd exec -> ping        {med(start_up):6.3f} s")
    print(f"virnucd VmRSS, idle         {med(rss):6.1f} MiB")
    print(f"python + torch VmRSS        {med(torch_rss):6.1f} MiB (anchor)")
    print(f"libtorch mapped in virnucd  {sum(d[2] for d in daemons)} of {runs} runs (goal: 0)")


if __name__ == "__main__":
    main()
