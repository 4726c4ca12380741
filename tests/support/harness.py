"""Test harness: a real virnucd subprocess, and a raw client that knows only the docs.

`RawClient` deliberately uses nothing but pyzmq and msgpack, as docs/protocol.md tells
another tool to: if it works, the documented protocol is enough to drive virnucd.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import zmq

from virnuc.pipeline.output_format import RUN_INFO
from virnuc.pipeline.report import REPORT_NAMES

from tests.support.poll import wait_for


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick for port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RawClient:
    """A client written from docs/protocol.md alone."""

    def __init__(self, endpoint: str, timeout: float = 10.0):
        self.endpoint = endpoint
        self.timeout = timeout
        self.context = zmq.Context()

    def request(
        self, message: dict[str, Any], dealer: bool = False, timeout: float | None = None
    ) -> dict[str, Any]:
        socket = self.context.socket(zmq.DEALER if dealer else zmq.REQ)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(self.endpoint)
        try:
            payload = msgpack.packb(message)
            socket.send_multipart([b"", payload] if dealer else [payload])
            if not socket.poll(int((timeout or self.timeout) * 1000)):
                raise TimeoutError(f"no reply from {self.endpoint}")
            frames = socket.recv_multipart()
            return msgpack.unpackb(frames[-1])  # type: ignore[no-any-return]
        finally:
            socket.close()

    def call(
        self, op: str, dealer: bool = False, timeout: float | None = None, **args: Any
    ) -> dict[str, Any]:
        message = {"v": 1, "id": uuid.uuid4().hex, "op": op, "args": args}
        reply = self.request(message, dealer=dealer, timeout=timeout)
        assert reply["id"] == message["id"]
        return reply

    def result(self, op: str, **args: Any) -> dict[str, Any]:
        reply = self.call(op, **args)
        assert reply["ok"], reply["error"]
        return reply["result"]  # type: ignore[no-any-return]

    def wait_state(
        self, job_id: str, states: tuple[str, ...], timeout: float = 120
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status = self.result("status", job_id=job_id)
            return status if status["state"] in states else None

        return wait_for(probe, timeout, f"job {job_id} to reach {states}", interval=0.1)

    def close(self) -> None:
        self.context.destroy(linger=0)


class Daemon:
    """virnucd as a subprocess on a temporary state dir, with the demo models pre-built."""

    def __init__(
        self, state_dir: Path, demo_cache: Path, *args: str, env: dict[str, str] | None = None
    ):
        self.state_dir = state_dir
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.log_path = state_dir.parent / f"{state_dir.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        models = state_dir / "models"
        if not models.exists():
            shutil.copytree(demo_cache, models)
        self.client = RawClient(f"ipc://{state_dir}/control.sock")

    def start(self) -> Daemon:
        self.spawn()
        wait_for(self._answers, 60, "virnucd to answer ping")
        return self

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start virnucd without waiting for it (for tests of its start-up itself)."""
        command = [
            sys.executable,
            "-m",
            "virnuc.daemon.main",
            "--state-dir",
            str(self.state_dir),
            "--log-format",
            "json",
            *self.args,
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        return self.process

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"virnucd exited {self.process.returncode}:\n{self.log_tail()}")
        try:
            return bool(self.client.call("ping", timeout=0.5)["ok"])
        except TimeoutError:
            return False

    def workers_ready(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        def probe() -> list[dict[str, Any]] | None:
            workers = self.client.result("workers")["workers"]
            idle = [w for w in workers if w["state"] in ("idle", "busy")]
            return workers if len(idle) >= count else None

        return wait_for(probe, timeout, f"{count} workers to say hello", interval=0.1)

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON lines of the log (virnucd's and its workers'), in order."""
        return json_log_events(self.log_path)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 60) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            try:
                self.client.call("shutdown")
            except TimeoutError:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"virnucd did not stop in {timeout} s:\n{self.log_tail()}"
                ) from None
        return self.process.returncode

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.client.close()


def worker_pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        status = Path(f"/proc/{pid}/stat").read_text().split()
        if status[2] != "Z":  # a zombie is dead, only not yet reaped
            alive.append(pid)
    return alive


def write_as_fastq(fasta: Path, fastq: Path, first: int = 0, count: int | None = None) -> Path:
    """Records [first, first + count) of `fasta` as 4-line FASTQ reads (gzip when the
    name ends in .gz), each header kept whole and qualities of the read's length whose
    first characters are '@' and '+', legal qualities that look like FASTQ's markers."""
    from virnuc.pipeline.fasta import read_records

    text = []
    with fasta.open() as handle:
        headers = [line[1:].rstrip("\n") for line in handle if line.startswith(">")]
    for record in read_records(fasta, count=None):
        if record.index < first or (count is not None and record.index >= first + count):
            continue
        quality = ("@+" + "I" * len(record.sequence))[: len(record.sequence)]
        text.append(f"@{headers[record.index]}\n{record.sequence}\n+\n{quality}\n")
    data = "".join(text).encode("ascii")
    fastq.write_bytes(gzip.compress(data) if fastq.name.endswith(".gz") else data)
    return fastq


def write_fasta_part(fasta: Path, out: Path, first: int, count: int) -> Path:
    """Records [first, first + count) of `fasta`, as FASTA with their headers whole."""
    from virnuc.pipeline.fasta import read_records

    with fasta.open() as handle:
        headers = [line[1:].rstrip("\n") for line in handle if line.startswith(">")]
    with out.open("w") as handle:
        for record in read_records(fasta, offset=0):
            if first <= record.index < first + count:
                handle.write(f">{headers[record.index]}\n{record.sequence}\n")
    return out


def read_table(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def assert_same_outputs(expected: Path, got: Path, atol: float = 1e-6) -> None:
    """Same rows in the same order, same ids and labels; scores equal within `atol`.

    Scores may differ in the last float32 digit when frames were batched differently
    (e.g. after a resume), which is why they are compared as numbers.
    """
    for name, score_columns in (
        ("prediction_results.txt", (2, 3)),
        ("prediction_results_highestscore.csv", ()),
        ("sequence_summary.tsv", (5,)),
    ):
        want, have = read_table(expected / name), read_table(got / name)
        assert len(have) == len(want), f"{name}: {len(have)} rows, expected {len(want)}"
        for row_want, row_have in zip(want, have, strict=True):
            for i, (a, b) in enumerate(zip(row_want, row_have, strict=True)):
                if i in score_columns and a != b and a != "NA":
                    assert abs(float(a) - float(b)) <= atol, f"{name}: {row_have} vs {row_want}"
                else:
                    assert a == b, f"{name}: {row_have} vs {row_want}"
    # The report step (run_info.json, the plot, report.html) runs after `done`: its
    # files may still be being written, each atomically, when the job is seen done.
    reported = {f".{name}.partial" for name in (RUN_INFO, *REPORT_NAMES)}
    leftovers = [
        p.name for p in got.iterdir() if p.name.endswith(".partial") and p.name not in reported
    ]
    assert not leftovers, f"temporary files left in {got}: {leftovers}"


@contextlib.contextmanager
def running_daemon(
    state_dir: Path, demo_cache: Path, *args: str, workers: int = 1
) -> Iterator[Daemon]:
    """A started virnucd whose workers said hello; stopped cleanly (exit 0) afterwards."""
    daemon = Daemon(state_dir, demo_cache, "--workers", str(workers), *args)
    try:
        daemon.start()
        daemon.workers_ready(workers)
        yield daemon
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.close()


def json_log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON objects among a log file's lines, in order (other lines skipped)."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events
