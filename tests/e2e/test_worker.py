"""The worker process against a fake daemon: a real ROUTER over ipc:// in a temp dir.

Every wait is a socket poll or a process poll with a deadline; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zmq

from virnuc.model_wire import spec_to_wire
from virnuc.parts import read_part
from virnuc.pipeline.fasta import FastaRecord, read_records
from virnuc.pipeline.frame_cache import frame_key
from virnuc.pipeline.frames import record_frames
from virnuc.pipeline.outputs import RecordResult
from virnuc.pipeline.predict import Predictor
from virnuc.pipeline.spec import demo_spec
from virnuc.protocol import (
    Assign,
    BatchDone,
    Cancel,
    Checkpoint,
    DaemonBeat,
    FromWorker,
    Heartbeat,
    Hello,
    Leaving,
    ModelsLoaded,
    UnitDone,
    WireModelSpec,
    WorkerError,
    decode_from_worker,
)

from bench.synthetic import random_lengths, write_fasta

EXAMPLE = Path(__file__).parents[2] / "examples" / "example.fasta"
START_S = 60.0  # a cold worker imports torch, transformers and esm
STEP_S = 20.0  # anything else the worker is asked to do


# --- the daemon's end --------------------------------------------------------------------------


@dataclass
class HubSocket:
    """The daemon's side of the worker socket, with a log of everything received."""

    sock: zmq.Socket[bytes]
    endpoint: str
    seen: list[tuple[str, FromWorker]] = field(default_factory=list)

    def receive(self, timeout: float = STEP_S) -> tuple[str, FromWorker] | None:
        if not self.sock.poll(int(timeout * 1000)):
            return None
        identity, payload = self.sock.recv_multipart()
        item = (identity.decode(), decode_from_worker(payload))
        self.seen.append(item)
        return item

    def expect(
        self, kind: type, timeout: float = STEP_S, *, skip: tuple[type, ...] = (), beats=False
    ) -> Any:
        """The next message that is not in `skip` (nor a heartbeat, unless `beats`);
        it must be a `kind`."""
        ignored = skip if beats else (Heartbeat, *skip)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            item = self.receive(left)
            if item is None:
                break
            if isinstance(item[1], ignored):
                continue
            assert isinstance(item[1], kind), f"expected {kind.__name__}, got {item[1]}"
            return item[1]
        raise AssertionError(f"no {kind.__name__} within {timeout} s")

    def collect_until(self, kind: type, timeout: float = STEP_S) -> tuple[list[FromWorker], Any]:
        """Every non-heartbeat message up to and including the first `kind`."""
        got: list[FromWorker] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            item = self.receive(left)
            if item is None:
                break
            if isinstance(item[1], kind):
                return got, item[1]
            if not isinstance(item[1], Heartbeat):
                got.append(item[1])
        raise AssertionError(f"no {kind.__name__} within {timeout} s; got {got}")

    def drain(self, timeout: float = 0.5) -> list[FromWorker]:
        """What is still in flight from a worker that is already gone."""
        got = []
        while (item := self.receive(timeout)) is not None:
            got.append(item[1])
        return got

    def send(self, worker_id: str, message: Any) -> None:
        self.sock.send_multipart([worker_id.encode(), message.encode()])


@contextlib.contextmanager
def fake_daemon() -> Iterator[HubSocket]:
    """A ROUTER bound in a short temp dir (ipc paths are limited to ~100 bytes)."""
    where = tempfile.mkdtemp(prefix="vw", dir="/tmp")
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    endpoint = f"ipc://{where}/workers.sock"
    sock.bind(endpoint)
    try:
        yield HubSocket(sock, endpoint)
    finally:
        sock.close()
        context.term()
        shutil.rmtree(where, ignore_errors=True)


class Spawner:
    """Starts worker processes; `close` kills and reaps every one still running."""

    def __init__(self, demo_cache: Path, log_dir: Path):
        self.demo_cache = demo_cache
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def __call__(
        self, endpoint: str, *extra: str, fault: str | None = None
    ) -> subprocess.Popen[bytes]:
        env = worker_env(self.demo_cache)
        if fault:
            env["VIRNUC_FAULT"] = fault
        log = self.log_dir / f"worker-{len(self.procs)}.log"  # its JSON log, for post-mortems
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                worker_command(endpoint, "w0", *extra),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def daemon() -> Iterator[HubSocket]:
    with fake_daemon() as d:
        yield d


@pytest.fixture
def spawn(demo_cache: Path, tmp_path: Path) -> Iterator[Spawner]:
    spawner = Spawner(demo_cache, tmp_path)
    yield spawner
    spawner.close()


@dataclass
class WarmWorker:
    """One worker process shared by the tests that leave it idle and healthy."""

    daemon: HubSocket
    proc: subprocess.Popen[bytes]
    hello: Hello


@pytest.fixture(scope="module")
def warm(demo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarmWorker]:
    spawner = Spawner(demo_cache, tmp_path_factory.mktemp("warm"))
    with fake_daemon() as daemon:
        proc = spawner(daemon.endpoint)
        try:
            yield WarmWorker(daemon, proc, daemon.expect(Hello, START_S))
        finally:
            spawner.close()


def worker_env(demo_cache: Path) -> dict[str, str]:
    """One torch thread: on a busy 2-core box, OpenMP threads spinning against other
    processes make the tiny models 40x slower."""
    env = {**os.environ, "VIRNUC_CACHE_DIR": str(demo_cache), "OMP_NUM_THREADS": "1"}
    env.pop("VIRNUC_FAULT", None)
    return env


def worker_command(endpoint: str, worker_id: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "virnuc.worker.serve",
        "--endpoint",
        endpoint,
        "--worker-id",
        worker_id,
        "--heartbeat-interval",
        "0.2",
        "--block-frames",
        "8",
        *extra,
    ]


def wait_exit(proc: subprocess.Popen[bytes], timeout: float = STEP_S) -> int:
    return proc.wait(timeout)


def of_type(messages: list[FromWorker], kind: Any) -> list[Any]:
    """The messages of one type (or a union of types), in order."""
    return [m for m in messages if isinstance(m, kind)]


# --- inputs and expectations -------------------------------------------------------------


@pytest.fixture(scope="module")
def example_records() -> list[FastaRecord]:
    return list(read_records(EXAMPLE))


@pytest.fixture(scope="module")
def long_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long enough that a unit is still running when the test interrupts it."""
    path = tmp_path_factory.mktemp("long") / "long.fa"
    write_fasta(path, random_lengths(1000, seed=11), seed=11)
    return path


@pytest.fixture(scope="module")
def reference(demo_models, example_records) -> list[RecordResult]:
    """The in-process Predictor's results on the example: what parts must hold."""
    return list(Predictor(demo_models, keep_embeddings=True).predict(example_records))


def models(demo_cache: Path, **changes: Any) -> WireModelSpec:
    return spec_to_wire(dataclasses.replace(demo_spec(demo_cache), **changes))


def assign(
    root: Path, demo_cache: Path, job: str, records: list[FastaRecord], path: Path = EXAMPLE, **kw
) -> Assign:
    """Assign `records` (consecutive, from `path`) as unit 0 of `job`; like the daemon,
    create its parts dir (a worker never creates a job's directory)."""
    (root / job / "parts").mkdir(parents=True, exist_ok=True)
    fields: dict[str, Any] = dict(
        job_id=job,
        unit_id=0,
        input=str(path),
        start_offset=records[0].offset,
        start_record=records[0].index,
        record_count=len(records),
        models=models(demo_cache),
        save_embeddings=True,
        checkpoint_every=3,
        parts_dir=str(root / job / "parts"),
    )
    fields.update(kw)
    return Assign(**fields)


def check_contiguous(acks: list[Checkpoint], first: int, offsets: dict[int, int]) -> int:
    """Acks tile the records from `first`, each ending where its last record ends."""
    for ack in acks:
        assert ack.first_record == first
        first += ack.record_count
        assert ack.end_offset == offsets[first - 1]
    return first


def part_results(acks: list[Checkpoint]) -> list[RecordResult]:
    out: list[RecordResult] = []
    for ack in acks:
        contents = read_part(Path(ack.path), size=ack.size, sha256=ack.sha256)
        assert (contents.first_record, contents.record_count) == (
            ack.first_record,
            ack.record_count,
        )
        assert contents.frames == ack.frames
        out.extend(contents.results())
    return out


def assert_same_results(got: list[RecordResult], expected: list[RecordResult]) -> None:
    assert [r.record_id for r in got] == [r.record_id for r in expected]
    assert [r.frame_ids for r in got] == [r.frame_ids for r in expected]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g.scores, e.scores, rtol=0, atol=1e-6)
        if e.nucleotide is not None:
            assert g.nucleotide is not None
            assert g.protein is not None
            np.testing.assert_allclose(g.nucleotide, e.nucleotide, rtol=0, atol=1e-5)
            np.testing.assert_allclose(g.protein, e.protein, rtol=0, atol=1e-5)


def offsets_of(records: list[FastaRecord]) -> dict[int, int]:
    return {r.index: r.end_offset for r in records}


# --- one warm worker, many units ------------------------------------------------------------


def test_hello_then_heartbeats(warm: WarmWorker) -> None:
    hello = warm.hello
    assert (hello.worker_id, hello.pid, hello.device, hello.models) == (
        "w0",
        warm.proc.pid,
        "cpu",
        None,
    )
    assert {"virnuc", "torch", "transformers", "fair-esm", "python"} <= set(hello.versions)
    beats = [warm.daemon.receive(STEP_S) for _ in range(2)]
    assert [type(b[1]) for b in beats if b] == [Heartbeat, Heartbeat]
    seqs = [b[1].seq for b in beats if b and isinstance(b[1], Heartbeat)]
    assert seqs[0] is not None
    assert seqs[1] == seqs[0] + 1
    assert {identity for identity, _ in warm.daemon.seen} == {"w0"}


def test_units_are_tiled_by_parts_equal_to_the_predictor(
    warm: WarmWorker, demo_cache: Path, tmp_path: Path, example_records, reference
) -> None:
    daemon = warm.daemon
    # a whole unit: parts of 3 records tile it, then unit_done
    daemon.send("w0", assign(tmp_path, demo_cache, "j1", example_records))
    messages, done = daemon.collect_until(UnitDone)
    assert (done.job_id, done.unit_id) == ("j1", 0)
    for loaded in of_type(messages, ModelsLoaded):  # unless an earlier test loaded them
        assert (loaded.models["profile"], loaded.models["device"]) == ("demo", "cpu")
    acks = of_type(messages, Checkpoint)
    assert [a.record_count for a in acks] == [3, 3, 3, 3, 3, 3, 2]
    assert check_contiguous(acks, 0, offsets_of(example_records)) == 20
    assert acks[-1].end_offset == EXAMPLE.stat().st_size
    assert_same_results(part_results(acks), reference)
    progress = of_type(messages, BatchDone)
    assert progress
    assert all(0 < p.records_done <= 20 for p in progress)

    # resume from the middle of a unit: only the rest is computed, models stay warm
    rest = example_records[7:]
    daemon.send("w0", assign(tmp_path, demo_cache, "j2", rest, checkpoint_every=5))
    messages, _ = daemon.collect_until(UnitDone)
    assert not of_type(messages, ModelsLoaded | WorkerError)
    acks = of_type(messages, Checkpoint)
    assert [(a.first_record, a.record_count) for a in acks] == [(7, 5), (12, 5), (17, 3)]
    assert Path(acks[0].path).name == "u000000-r0000000007.npz"
    assert_same_results(part_results(acks), reference[7:])

    # without embeddings, the parts hold none
    daemon.send("w0", assign(tmp_path, demo_cache, "j3", rest, save_embeddings=False))
    messages, _ = daemon.collect_until(UnitDone)
    assert all(r.nucleotide is None for r in part_results(of_type(messages, Checkpoint)))


def expected_reuse(units: list[list[FastaRecord]]) -> list[int]:
    """Per unit of one job, its frames identical to a frame computed before in the job."""
    seen: set[bytes] = set()
    counts = []
    for records in units:
        count = 0
        for record in records:
            for frame in record_frames(record.id, record.sequence, 300):
                count += frame_key(frame) in seen
                seen.add(frame_key(frame))
        counts.append(count)
    return counts


def test_identical_frames_are_reused_across_a_jobs_units_and_never_across_jobs(
    warm: WarmWorker, demo_cache: Path, tmp_path: Path, example_records, reference
) -> None:
    daemon = warm.daemon
    first, overlapping = example_records[:10], example_records[5:15]

    def run_unit(job: str, unit_id: int, records: list[FastaRecord]) -> list[Checkpoint]:
        daemon.send("w0", assign(tmp_path, demo_cache, job, records, unit_id=unit_id))
        messages, _ = daemon.collect_until(UnitDone)
        acks = of_type(messages, Checkpoint)
        assert_same_results(part_results(acks), reference[records[0].index : records[-1].index + 1])
        return acks

    def reused(acks: list[Checkpoint]) -> int:
        return sum(a.frames_reused for a in acks)

    # one job: its second unit repeats five records of its first (as duplicate reads do)
    counts = expected_reuse([first, overlapping])
    assert counts[1] > counts[0]
    assert reused(run_unit("dup-a", 0, first)) == counts[0]
    assert reused(run_unit("dup-a", 1, overlapping)) == counts[1]
    # another job (another user's, as far as the worker knows) with the same reads:
    # nothing of the first job's is reused, only its own duplicates count
    assert reused(run_unit("dup-b", 0, first)) == counts[0]
    assert reused(run_unit("dup-b", 1, first)) == sum(len(r.frame_ids) for r in reference[:10])


def test_failures_are_reported_and_the_worker_carries_on(
    warm: WarmWorker, demo_cache: Path, tmp_path: Path, example_records
) -> None:
    daemon = warm.daemon
    # malformed messages are dropped (and logged), never fatal
    daemon.sock.send_multipart([b"w0", b"\xc1 not msgpack"])
    daemon.send("w0", UnitDone(job_id="j", unit_id=0))  # a worker's message, wrong way round

    # models that cannot load: a non-fatal error for this unit
    bad_models = models(demo_cache, classifier=str(tmp_path / "missing.pth"), profile=None)
    daemon.send("w0", assign(tmp_path, demo_cache, "bad", example_records, models=bad_models))
    error = daemon.expect(WorkerError)
    assert (error.fatal, error.job_id, error.unit_id) == (False, "bad", 0)
    assert "cannot load the models" in error.message

    # an input that ends before the unit does: the records before the end are kept
    daemon.send("w0", assign(tmp_path, demo_cache, "short", example_records, record_count=25))
    messages, error = daemon.collect_until(WorkerError)
    assert (error.fatal, error.job_id) == (False, "short")
    assert "failed at record 20: the input ends there" in error.message
    assert check_contiguous(of_type(messages, Checkpoint), 0, offsets_of(example_records)) == 20
    assert not of_type(messages, UnitDone)

    # a FASTA that turns out unreadable at record 6: records 0-5 are kept
    damaged = tmp_path / "damaged.fa"
    lines = EXAMPLE.read_bytes().split(b"\n")
    header_7 = next(i for i, line in enumerate(lines) if line.startswith(b">contig_00007"))
    lines[header_7 + 1] = b"\xff" + lines[header_7 + 1][1:]
    damaged.write_bytes(b"\n".join(lines))
    daemon.send("w0", assign(tmp_path, demo_cache, "damaged", example_records[:10], damaged))
    messages, error = daemon.collect_until(WorkerError)
    assert "failed at record 6: cannot read the input" in error.message
    assert check_contiguous(of_type(messages, Checkpoint), 0, offsets_of(example_records)) == 6

    # a start offset that is not a record start
    wrong = assign(tmp_path, demo_cache, "wrong", example_records[2:], start_offset=5)
    daemon.send("w0", wrong)
    messages, error = daemon.collect_until(WorkerError)
    assert "failed at record 2: byte offset 5 is not the start of a record" in error.message
    assert not of_type(messages, Checkpoint)

    # still healthy
    daemon.send("w0", assign(tmp_path, demo_cache, "ok", example_records[:4]))
    daemon.collect_until(UnitDone)
    assert warm.proc.poll() is None


def test_cancel_stops_the_unit_and_the_next_assign_runs(
    warm: WarmWorker, demo_cache: Path, tmp_path: Path, long_input: Path, example_records
) -> None:
    daemon = warm.daemon
    records = list(read_records(long_input))
    daemon.send("w0", assign(tmp_path, demo_cache, "long", records, long_input))
    first = daemon.expect(Checkpoint, STEP_S, skip=(ModelsLoaded, BatchDone))
    cancelled_at = time.monotonic()
    daemon.send("w0", Cancel(job_id="long"))
    daemon.send("w0", assign(tmp_path, demo_cache, "next", example_records[:4]))
    messages, done = daemon.collect_until(UnitDone)
    assert done.job_id == "next"
    assert time.monotonic() - cancelled_at < 10
    stale = [m for m in messages if getattr(m, "job_id", None) == "long"]
    assert not of_type(stale, UnitDone | WorkerError)
    acks = [first, *of_type(stale, Checkpoint)]
    assert check_contiguous(acks, 0, offsets_of(records)) < len(records)
    for ack in acks:  # every acked part is intact
        read_part(Path(ack.path), size=ack.size, sha256=ack.sha256)

    # a cancel already taken from the inbox does not stick to the job id
    daemon.send("w0", assign(tmp_path, demo_cache, "long", records[:3], long_input, unit_id=1))
    _, done = daemon.collect_until(UnitDone)
    assert (done.job_id, done.unit_id) == ("long", 1)


def test_a_unit_whose_bytes_changed_since_planning_is_not_finished(
    warm: WarmWorker, demo_cache: Path, tmp_path: Path, example_records
) -> None:
    """The assign carries the unit's planned digest; the input's last record was
    rewritten since (same length): the unit ends with an error, its last record in
    no part, so the daemon never sees the unit done."""
    daemon = warm.daemon
    path = tmp_path / "in.fa"
    data = EXAMPLE.read_bytes()
    path.write_bytes(data)
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    unit = dict(unit_offset=0, unit_end_offset=len(data), digest=digest)
    daemon.send("w0", assign(tmp_path, demo_cache, "same", example_records, path, **unit))
    daemon.collect_until(UnitDone)  # unchanged: done

    last = data.rstrip()
    path.write_bytes(last[:-1] + (b"G" if last[-1:] == b"C" else b"C") + data[len(last) :])
    daemon.send("w0", assign(tmp_path, demo_cache, "changed", example_records, path, **unit))
    messages, error = daemon.collect_until(WorkerError)
    assert (error.fatal, error.job_id, error.unit_id) == (False, "changed", 0)
    assert error.message.startswith(
        f"input changed since submission: {path}: unit 0 (records 0..19"
    )
    assert not of_type(messages, UnitDone)
    assert check_contiguous(of_type(messages, Checkpoint), 0, offsets_of(example_records)) < 20


# --- stopping and dying -----------------------------------------------------------------------


def test_sigterm_mid_unit_writes_an_emergency_part_and_exits_0(
    daemon: HubSocket, spawn, demo_cache: Path, tmp_path: Path, long_input: Path
) -> None:
    records = list(read_records(long_input))
    proc = spawn(daemon.endpoint)
    daemon.expect(Hello, START_S)
    daemon.send("w0", assign(tmp_path, demo_cache, "j", records, long_input, checkpoint_every=50))
    daemon.expect(BatchDone, STEP_S, skip=(ModelsLoaded,))
    assert daemon.expect(Heartbeat, STEP_S, skip=(BatchDone, Checkpoint), beats=True)
    proc.send_signal(signal.SIGTERM)  # the heartbeat came while computing; stop now
    assert wait_exit(proc) == 0
    messages = [m for _, m in daemon.seen] + daemon.drain()
    assert not of_type(messages, UnitDone | WorkerError)
    acks = of_type(messages, Checkpoint)
    assert acks, "the records finished since the last part were not saved"
    end = check_contiguous(acks, 0, offsets_of(records))
    assert 0 < end < len(records)
    reported = max(m.records_done for m in of_type(messages, BatchDone))
    assert end >= reported  # every record reported finished is in a part
    parts_dir = tmp_path / "j" / "parts"
    assert sorted(p.name for p in parts_dir.iterdir()) == sorted(Path(a.path).name for a in acks)


@pytest.mark.parametrize(
    ("fault", "acked", "on_disk"),
    [
        ("before_rename@2", [0], {"u000000-r0000000000.npz", "temp of r3"}),
        ("after_rename@2", [0], {"u000000-r0000000000.npz", "u000000-r0000000003.npz"}),
        ("after_ack@2", [0, 3], {"u000000-r0000000000.npz", "u000000-r0000000003.npz"}),
    ],
)
def test_fault_points_kill_at_the_right_moment(
    daemon: HubSocket,
    spawn,
    demo_cache: Path,
    tmp_path: Path,
    example_records,
    fault: str,
    acked: list[int],
    on_disk: set[str],
) -> None:
    proc = spawn(daemon.endpoint, fault=fault)
    daemon.expect(Hello, START_S)
    job = assign(tmp_path, demo_cache, "j", example_records)
    daemon.send("w0", job)
    assert wait_exit(proc) == -signal.SIGKILL
    messages = [m for _, m in daemon.seen] + daemon.drain()
    acks = of_type(messages, Checkpoint)
    assert [a.first_record for a in acks] == acked
    assert not of_type(messages, UnitDone)
    parts_dir = Path(job.parts_dir)
    temp = f".u000000-r0000000003.npz.{proc.pid}.tmp"  # see parts.temp_path
    names = {p.name for p in parts_dir.iterdir()}
    if temp in names:
        names = (names - {temp}) | {"temp of r3"}
    assert names == on_disk
    for ack in acks:
        read_part(Path(ack.path), size=ack.size, sha256=ack.sha256)


def test_mid_unit_fault_and_time_based_checkpoints(
    daemon: HubSocket, spawn, demo_cache: Path, tmp_path: Path, long_input: Path
) -> None:
    """Killed at its 40th block: parts were cut every 0.05 s meanwhile, not every
    `checkpoint_every` (1000) records, and progress was reported on the way."""
    records = list(read_records(long_input))
    proc = spawn(daemon.endpoint, "--checkpoint-seconds", "0.05", fault="mid_unit@40")
    daemon.expect(Hello, START_S)
    job = assign(tmp_path, demo_cache, "j", records, long_input, checkpoint_every=1000)
    daemon.send("w0", job)
    assert wait_exit(proc) == -signal.SIGKILL
    messages = [m for _, m in daemon.seen] + daemon.drain()
    progress = of_type(messages, BatchDone)
    assert progress, "no batch_done before the fault"
    assert len(progress) <= 40
    assert not of_type(messages, UnitDone)
    acks = of_type(messages, Checkpoint)
    assert len(acks) >= 2
    assert check_contiguous(acks, 0, offsets_of(records)) < len(records)


def test_resume_after_a_crash_equals_an_uninterrupted_run(
    daemon: HubSocket, spawn, demo_cache: Path, tmp_path: Path, example_records, reference
) -> None:
    """Kill with a part renamed but unacked; a new w0 (ROUTER_HANDOVER) resumes after
    the last ack, rewrites that part, and the acked parts equal the uninterrupted run."""
    first = spawn(daemon.endpoint, fault="after_rename@3")
    daemon.expect(Hello, START_S)
    daemon.send("w0", assign(tmp_path, demo_cache, "j", example_records))
    assert wait_exit(first) == -signal.SIGKILL
    acked = of_type([m for _, m in daemon.seen] + daemon.drain(), Checkpoint)
    resume_at = check_contiguous(acked, 0, offsets_of(example_records))
    assert resume_at == 6

    second = spawn(daemon.endpoint)
    assert daemon.expect(Hello, START_S).pid == second.pid
    rest = example_records[resume_at:]
    daemon.send("w0", assign(tmp_path, demo_cache, "j", rest))
    messages, _ = daemon.collect_until(UnitDone)
    acks = acked + of_type(messages, Checkpoint)
    assert check_contiguous(acks, 0, offsets_of(example_records)) == 20
    assert_same_results(part_results(acks), reference)


def test_dies_with_its_parent(daemon: HubSocket, demo_cache: Path) -> None:
    """PR_SET_PDEATHSIG: SIGKILL the process that started the worker; the worker goes."""
    launcher = (
        "import os, subprocess, sys\n"
        "cmd = sys.argv[1:] + ['--parent-pid', str(os.getpid())]\n"
        "child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    env = worker_env(demo_cache)
    command = [sys.executable, "-c", launcher, *worker_command(daemon.endpoint, "w0")]
    parent = subprocess.Popen(command, env=env, stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        worker_pid = int(parent.stdout.readline())
        assert daemon.expect(Hello, START_S).pid == worker_pid
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while alive(worker_pid) and time.monotonic() < deadline:
            daemon.receive(0.1)  # a bounded wait that also keeps the socket drained
        assert not alive(worker_pid)
    finally:
        if parent.stdout is not None:
            parent.stdout.close()
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for init to reap it counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(os.getpid() == 1, reason="pid 1 must not be our own pid")
def test_exits_at_once_when_started_for_another_parent(daemon: HubSocket, spawn) -> None:
    """The daemon died between fork and prctl: the worker must not live on."""
    orphan = spawn(daemon.endpoint, "--parent-pid", "1")
    assert wait_exit(orphan, START_S) == 4
    assert daemon.drain(0) == []  # not even a hello


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_gpu_is_fatal_not_a_silent_cpu_fallback(daemon: HubSocket, spawn) -> None:
    proc = spawn(daemon.endpoint, "--device", "cuda:1")
    error = daemon.expect(WorkerError, START_S)  # and no hello first: it is not ready
    assert error.fatal is True
    assert "CUDA is not available" in error.message
    assert wait_exit(proc) == 3


# --- a Slurm pilot's own ends ---------------------------------------------------------------


def test_a_pilot_with_no_unit_for_idle_exit_says_leaving_and_exits_0(
    daemon: HubSocket, spawn
) -> None:
    proc = spawn(daemon.endpoint, "--idle-exit", "1", "--daemon-timeout", "60")
    daemon.expect(Hello, START_S)
    leaving = daemon.expect(Leaving, STEP_S)
    assert leaving.reason == "idle for 1 s"
    assert wait_exit(proc) == 0


def test_a_pilot_whose_daemon_falls_silent_exits_by_itself(daemon: HubSocket, spawn) -> None:
    proc = spawn(daemon.endpoint, "--daemon-timeout", "2")
    hello = daemon.expect(Hello, START_S)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # virnucd alive: its beats keep the pilot up
        daemon.send(hello.worker_id, DaemonBeat())
        daemon.receive(0.2)
    assert proc.poll() is None
    assert wait_exit(proc) == 4  # then silence: gone after --daemon-timeout


def test_an_array_task_takes_its_slots_id(daemon: HubSocket, demo_cache: Path) -> None:
    command = worker_command(daemon.endpoint, "unused")
    at = command.index("--worker-id")
    command[at : at + 2] = ["--array-worker-ids", "s3,s5"]
    env = {**worker_env(demo_cache), "SLURM_ARRAY_TASK_ID": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        identity, hello = daemon.receive(START_S) or ("", None)
        assert (identity, getattr(hello, "worker_id", None)) == ("s5", "s5")
    finally:
        proc.kill()
        proc.wait()
