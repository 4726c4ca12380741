"""End to end: the real virnucd, real worker subprocesses, real ZeroMQ over ipc://."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from virnuc.pipeline.frame_cache import frame_key
from virnuc.pipeline.frames import record_frames
from virnuc.pipeline.output_format import RUN_INFO
from virnuc.pipeline.run import predict_file

from bench.synthetic import random_lengths, write_fasta, write_fastq
from tests.support.harness import (
    Daemon,
    RawClient,
    assert_same_outputs,
    read_table,
    running_daemon,
    write_as_fastq,
    write_fasta_part,
)
from tests.support.poll import wait_for

EXAMPLE = Path(__file__).parents[2] / "examples" / "example.fasta"
PREDICTIONS = "prediction_results.txt"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, demo_cache: Path) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("virnucd")
    config = root / "virnucd.toml"
    # Inputs may come from pytest's temporary directories only (a `forbidden` case below).
    config.write_text(f'input_roots = ["{tmp_path_factory.getbasetemp()}", "{EXAMPLE.parent}"]\n')
    with running_daemon(root / "state", demo_cache, "--config", str(config), workers=2) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def medium_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "medium.fa"
    write_fasta(path, random_lengths(60, seed=11), seed=11)
    return path


def reference(demo_models, fasta: Path | list[Path], out: Path) -> Path:
    predict_file(demo_models, fasta, out)
    return out


def submit(client: RawClient, fasta: Path, out: Path, dealer: bool = False, **extra) -> str:
    reply = client.call(
        "submit", dealer=dealer, input=str(fasta), output=str(out), profile="demo", **extra
    )
    assert reply["ok"], reply["error"]
    return reply["result"]["job_id"]


def test_raw_client_job_equals_the_in_process_pipeline(daemon, demo_models, tmp_path) -> None:
    job = submit(daemon.client, EXAMPLE, tmp_path / "out", dealer=True)
    status = daemon.client.wait_state(job, ("done", "failed"))
    assert status["state"] == "done", status
    assert status["records_done"] == status["records_total"] == 20
    assert_same_outputs(reference(demo_models, EXAMPLE, tmp_path / "ref"), tmp_path / "out")
    report = tmp_path / "out" / "report.html"  # made after `done` is recorded
    wait_for(report.exists, 60, "the report")
    page = report.read_text()
    assert "data:image/png;base64," in page
    assert (tmp_path / "out" / "prediction.png").read_bytes().startswith(b"\x89PNG")
    assert "DEMO MODELS" in page
    # both paths record the run alike: the same keys, the same demo files and checksums
    info = json.loads((tmp_path / "out" / RUN_INFO).read_text())
    ref_info = json.loads((tmp_path / "ref" / RUN_INFO).read_text())
    assert info.keys() == ref_info.keys()
    assert info["models"] == ref_info["models"]
    assert info["inputs"] == [str(EXAMPLE)]


def test_two_jobs_back_to_back_complete_without_reloading_models(
    daemon, demo_models, medium_input, tmp_path
) -> None:
    daemon.client.call("ping")
    before = {w["id"]: w["model_loads"] for w in daemon.workers_ready(2)}
    first = submit(daemon.client, medium_input, tmp_path / "a", checkpoint_every=7)
    second = submit(daemon.client, EXAMPLE, tmp_path / "b")
    for job in (first, second):
        assert daemon.client.wait_state(job, ("done", "failed"))["state"] == "done"
    after = {w["id"]: w["model_loads"] for w in daemon.client.result("workers")["workers"]}
    assert all(after[w] <= max(before[w], 1) for w in after), (before, after)
    assert_same_outputs(reference(demo_models, medium_input, tmp_path / "ref"), tmp_path / "a")
    listed = [j["job_id"] for j in daemon.client.result("list")["jobs"]]
    assert listed.index(first) < listed.index(second)


def test_workers_reports_real_worker_pids(daemon) -> None:
    workers = daemon.workers_ready(2)
    assert sorted(w["id"] for w in workers) == ["w0", "w1"]
    for worker in workers:
        cmdline = Path(f"/proc/{worker['pid']}/cmdline").read_bytes().split(b"\0")
        assert b"virnuc.worker.boot" in cmdline
        assert worker["device"] == "cpu"


def test_kill_stops_the_job_everywhere_and_leaves_no_outputs(daemon, tmp_path) -> None:
    big = tmp_path / "big.fa"
    write_fasta(big, random_lengths(400, seed=3, low=1500, high=3000), seed=3)
    out = tmp_path / "out"
    job = submit(daemon.client, big, out, checkpoint_every=5)
    wait_for(
        lambda: daemon.client.result("status", job_id=job)["records_done"] > 0,
        60,
        "the job to make progress",
    )
    assert daemon.client.result("kill", job_id=job) == {"job_id": job, "state": "killed"}
    wait_for(
        lambda: all("job_id" not in w for w in daemon.client.result("workers")["workers"]),
        10,
        "every worker to drop the killed job",
    )
    assert daemon.client.result("status", job_id=job)["state"] == "killed"
    assert not out.exists() or list(out.iterdir()) == []
    # A part the worker was writing as the kill came may land after the reply; its
    # refused ack makes the daemon sweep the job's directory again.
    job_dir = daemon.state_dir / "jobs" / job
    wait_for(lambda: not job_dir.exists(), 10, "the killed job's parts to be removed")
    again = daemon.client.call("kill", job_id=job)
    assert again["error"]["code"] == "conflict"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"v": 2, "id": "x", "op": "ping", "args": {}}, "unsupported_version"),
        ({"v": 1, "id": "x", "op": "frobnicate", "args": {}}, "unknown_op"),
        ({"v": 1, "id": "x", "op": "status", "args": {"job_id": 7}}, "bad_request"),
        ({"v": 1, "id": "x", "op": "status", "args": {"job_id": "nope"}}, "not_found"),
        ({"v": 1, "id": "x", "op": "ping", "args": {"pad": "x" * (9 << 19)}}, "too_large"),
    ],
)
def test_protocol_errors_come_back_with_their_codes(daemon, message, code) -> None:
    reply = daemon.client.request(message)
    assert reply["ok"] is False
    assert reply["error"]["code"] == code
    assert daemon.client.call("ping")["ok"]


def test_submit_refusals_name_what_is_wrong(daemon, tmp_path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    cases = [
        (notes, tmp_path / "o2", "invalid_input", "not a FASTA or FASTQ file"),
        (Path("/etc/hosts"), tmp_path / "o3", "forbidden", "outside the allowed input roots"),
    ]
    for fasta, out, code, text in cases:
        reply = daemon.client.call("submit", input=str(fasta), output=str(out), profile="demo")
        assert reply["error"]["code"] == code, reply
        assert text in reply["error"]["message"]
    done = tmp_path / "done"
    job = submit(daemon.client, EXAMPLE, done)
    daemon.client.wait_state(job, ("done",))
    reply = daemon.client.call("submit", input=str(EXAMPLE), output=str(done), profile="demo")
    assert reply["error"]["code"] == "conflict"
    assert "--force" in reply["error"]["message"]


def test_a_bf16_job_runs_its_models_in_bf16_and_stays_close_to_fp32(
    daemon, demo_models, tmp_path
) -> None:
    """Precision is part of a job's models: the worker reloads them in bf16 (on CPU
    too), `status` says so, and the scores move a little, not the frames."""
    job = submit(daemon.client, EXAMPLE, tmp_path / "bf16", precision="bf16")
    status = daemon.client.wait_state(job, ("done", "failed"))
    assert status["state"] == "done", status
    assert status["precision"] == "bf16"
    want = read_table(reference(demo_models, EXAMPLE, tmp_path / "ref") / "prediction_results.txt")
    have = read_table(tmp_path / "bf16" / "prediction_results.txt")
    assert [row[0] for row in have] == [row[0] for row in want]  # same frames, same order
    scores = [(float(a[2]), float(b[2])) for a, b in zip(want[1:], have[1:], strict=True)]
    assert max(abs(a - b) for a, b in scores) < 0.05
    assert any(a != b for a, b in scores), "bit-identical to fp32: bf16 did not run"
    fp32 = submit(daemon.client, EXAMPLE, tmp_path / "fp32")
    assert daemon.client.result("status", job_id=fp32)["precision"] == "fp32"


SOURCE = 7  # sequence_summary.tsv's `source` column, before `warnings`


def without_source(summary: Path) -> list[list[str]]:
    """`sequence_summary.tsv` less its `source` column (the file's name)."""
    rows = read_table(summary)
    assert rows[0][SOURCE] == "source"
    return [row[:SOURCE] + row[SOURCE + 1 :] for row in rows]


@pytest.mark.parametrize("name", ["reads.fq", "reads.fq.gz"])
def test_a_fastq_job_has_the_outputs_of_the_same_reads_as_fasta(
    daemon, medium_input, tmp_path, name
) -> None:
    fastq = write_as_fastq(medium_input, tmp_path / name)
    jobs = {
        "fasta": submit(daemon.client, medium_input, tmp_path / "fasta", checkpoint_every=7),
        "fastq": submit(daemon.client, fastq, tmp_path / "fastq", checkpoint_every=7),
    }
    for job in jobs.values():
        status = daemon.client.wait_state(job, ("done", "failed"))
        assert status["state"] == "done", status
        assert status["records_done"] == 60
    for table in ("prediction_results.txt", "prediction_results_highestscore.csv"):
        fasta_bytes = (tmp_path / "fasta" / table).read_bytes()
        assert (tmp_path / "fastq" / table).read_bytes() == fasta_bytes, table
    summary = "sequence_summary.tsv"
    assert without_source(tmp_path / "fastq" / summary) == without_source(
        tmp_path / "fasta" / summary
    )
    assert {row[SOURCE] for row in read_table(tmp_path / "fastq" / summary)[1:]} == {str(fastq)}


def test_a_job_of_several_inputs_writes_them_in_order_with_each_record_s_source(
    daemon, demo_models, medium_input, tmp_path
) -> None:
    """FASTA, FASTQ.gz and FASTQ in one job through the API's `inputs`: the outputs
    are those of the in-process run over the same files, in their order."""
    inputs = [
        write_as_fastq(medium_input, tmp_path / "b.fq.gz", first=0, count=25),
        write_fasta_part(medium_input, tmp_path / "a.fa", first=25, count=20),
        write_as_fastq(medium_input, tmp_path / "c.fq", first=45, count=15),
    ]
    out = tmp_path / "out"
    reply = daemon.client.call(
        "submit",
        inputs=[str(path) for path in inputs],
        output=str(out),
        profile="demo",
        checkpoint_every=4,
    )
    assert reply["ok"], reply
    status = daemon.client.wait_state(reply["result"]["job_id"], ("done", "failed"))
    assert status["state"] == "done", status
    assert status["records_done"] == status["records_total"] == 60
    assert status["input"] == str(inputs[0])
    assert status["inputs"] == [str(path) for path in inputs]

    assert_same_outputs(reference(demo_models, inputs, tmp_path / "ref"), out)
    rows = read_table(out / "sequence_summary.tsv")[1:]
    assert [row[0] for row in rows] == [f"contig_{i:05d}" for i in range(1, 61)]  # input order
    assert [row[SOURCE] for row in rows] == [str(inputs[0])] * 25 + [str(inputs[1])] * 20 + [
        str(inputs[2])
    ] * 15
    # the same records as one FASTA: the same frames and labels, scores to float32 noise
    # (frames batch differently when the records are cut into other units)
    single = read_table(reference(demo_models, medium_input, tmp_path / "single") / PREDICTIONS)
    have = read_table(out / PREDICTIONS)
    assert [row[:2] for row in have] == [row[:2] for row in single]
    for got, want in zip(have[1:], single[1:], strict=True):
        assert abs(float(got[3]) - float(want[3])) <= 1e-6, (got, want)


def test_duplicate_reads_are_computed_once_per_job_and_status_counts_them(
    daemon, demo_models, tmp_path
) -> None:
    """Half the reads repeat earlier ones: their frames are reused, `status` says how
    many, the outputs are the pipeline's. A second job over the same reads, on the
    same warm workers, reuses nothing of the first's: only its own duplicates.

    The job is cut into units spread over two workers, and a worker reuses only what
    it computed itself, so how many are reused depends on which worker ran which unit;
    it is never more than the duplicates, which reusing the other job's would exceed."""
    reads = tmp_path / "dups.fq"
    write_fastq(reads, 60, seed=4, coding=True, duplicates=0.5)
    sequences = [line for i, line in enumerate(reads.read_text().splitlines()) if i % 4 == 1]
    keys = [
        frame_key(frame)
        for i, sequence in enumerate(sequences)
        for frame in record_frames(f"r{i}", sequence, 300)
    ]
    expected = len(keys) - len(set(keys))
    assert expected > 0
    for out in (tmp_path / "a", tmp_path / "b"):
        job = submit(daemon.client, reads, out)
        status = daemon.client.wait_state(job, ("done", "failed"))
        assert status["state"] == "done", status
        assert status["frames_done"] == len(keys)
        assert 0 < status["frames_reused"] <= expected
        assert_same_outputs(reference(demo_models, reads, tmp_path / f"ref-{out.name}"), out)


def test_virnucd_never_loads_torch_itself(daemon) -> None:
    """After the jobs above ran, torch is still the workers' alone: virnucd's own
    memory maps no libtorch (the control plane stays small and starts fast)."""
    maps = Path(f"/proc/{daemon.process.pid}/maps").read_text()
    assert daemon.process.poll() is None
    assert "libtorch" not in maps
