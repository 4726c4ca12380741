"""`virnucctl compare-precision` against a real virnucd and its workers: identical runs
agree completely, a label that bf16 really flips is reported, --json's schema, and the
work dir gone after success, failure and Ctrl-C (unfinished jobs killed).

The flip is real, not mocked: the demo embedders score one record with exactly one
kept frame, once in fp32 and once in bf16 (`--save-embeddings`); a classifier is then
built from the demo one with its output bias moved to halfway between the two runs'
logit margins for that frame, so fp32 calls it one way and bf16 the other, through
the same daemon, workers and outputs as any job.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import pytest
import torch

from virnuc.pipeline.classifier import MLPClassifier
from virnuc.pipeline.frames import record_frames
from virnuc.pipeline.spec import DEMO_ESM_NAME, DEMO_VERSION

from tests.support.harness import Daemon, running_daemon
from tests.support.poll import wait_for
from tests.support.shared_daemon import SharedServer, shared_server
from tests.support.unix_users import UnixUsers

EXAMPLE = Path(__file__).parents[2] / "examples" / "example.fasta"
FLIP_ID = "flip"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, demo_cache: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("compare") / "state", demo_cache) as daemon:
        yield daemon


def virnucctl(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "virnuc.client.cli", "--state-dir", str(daemon.state_dir)]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)


def compare(daemon: Daemon, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    work.mkdir(exist_ok=True)
    return virnucctl(daemon, "compare-precision", *args, "--work-dir", str(work))


def one_frame_record(rng: random.Random) -> str:
    """300 random bases of which exactly one frame (of one chunk) is kept."""
    while True:
        sequence = "".join(rng.choices("ACGT", k=300))
        if len(list(record_frames(FLIP_ID, sequence, 300))) == 1:
            return sequence


def flip_input(path: Path) -> Path:
    rng = random.Random(11)
    records = {FLIP_ID: one_frame_record(rng)}
    records |= {
        f"other{i}": "".join(rng.choices("ACGT", k=rng.randint(300, 900))) for i in range(5)
    }
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in records.items()))
    return path


def test_identical_runs_agree_completely_with_the_json_schema(
    daemon: Daemon, tmp_path: Path
) -> None:
    """tf32 only changes CUDA matrix products: on the CPU it is fp32 itself."""
    run = compare(
        daemon,
        tmp_path / "work",
        str(EXAMPLE),
        "--profile",
        "demo",
        "--precision",
        "tf32",
        "--json",
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert set(report) == {
        "input", "seed", "models", "sampled", "input_records", "jobs", "precision",
        "records", "records_agree", "record_agreement", "frames", "frames_agree",
        "frame_agreement", "max_score_diff", "median_score_diff", "max_record_score_diff",
        "changed",
    }  # fmt: skip
    assert (report["sampled"], report["input_records"], report["records"]) == (20, 20, 20)
    assert report["record_agreement"] == report["frame_agreement"] == 1.0
    assert report["frames"] > 0
    assert report["max_score_diff"] == 0.0
    assert report["changed"] == []
    assert set(report["jobs"]) == {"fp32", "tf32"}
    assert list((tmp_path / "work").iterdir()) == []
    statuses = [daemon.client.result("status", job_id=j) for j in report["jobs"].values()]
    assert [(s["state"], s["precision"]) for s in statuses] == [("done", "fp32"), ("done", "tf32")]


def _embeddings(daemon: Daemon, fasta: Path, out: Path, precision: str) -> torch.Tensor:
    """The flip frame's classifier input (nucleotide ++ protein) from a real run."""
    run = virnucctl(
        daemon, "submit", str(fasta), "--out", str(out), "--profile", "demo",
        "--precision", precision, "--save-embeddings", "--wait",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    with h5py.File(out / "embeddings.h5") as h5:
        ids = [i.decode() if isinstance(i, bytes) else i for i in h5["ids"][:]]
        row = next(n for n, i in enumerate(ids) if i.startswith(f"{FLIP_ID}_"))
        features = [torch.from_numpy(h5[name][row]) for name in ("nucleotide", "protein")]
    return torch.cat(features).float()


def boundary_classifier(demo: Path, fp32: torch.Tensor, bf16: torch.Tensor, out: Path) -> Path:
    """The demo classifier with its virus bias moved so the flip frame's margin
    (virus logit - others logit) is +d/2 in fp32 and -d/2 in bf16."""
    state = torch.load(demo, weights_only=True)
    hidden, inputs = state["hidden_layer.weight"].shape
    model = MLPClassifier(inputs, hidden, 2)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        logits = model(torch.stack([fp32, bf16]))
        margins = logits[:, 1] - logits[:, 0]
        assert abs(float(margins[0] - margins[1])) > 1e-4, "bf16 left the frame unchanged"
        model.output_layer.bias[1] -= margins.mean()
        after = model(torch.stack([fp32, bf16]))
    assert (after[0, 1] > after[0, 0]) != (after[1, 1] > after[1, 0])
    torch.save(model.state_dict(), out)
    return out


def test_a_label_that_bf16_flips_is_reported(
    daemon: Daemon, demo_cache: Path, tmp_path: Path
) -> None:
    fasta = flip_input(tmp_path / "flip.fa")
    fp32 = _embeddings(daemon, fasta, tmp_path / "emb32", "fp32")
    bf16 = _embeddings(daemon, fasta, tmp_path / "emb16", "bf16")
    demo = demo_cache / DEMO_VERSION
    classifier = boundary_classifier(demo / "classifier.pth", fp32, bf16, tmp_path / "flip.pth")
    models = ["--esm", str(demo / f"{DEMO_ESM_NAME}.pt"), "--dnabert", str(demo / "dnabert")]
    models += ["--classifier", str(classifier)]
    run = compare(daemon, tmp_path / "work", str(fasta), *models, "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert [c["id"] for c in report["changed"]] == [FLIP_ID]
    change = report["changed"][0]
    assert {change["fp32_call"], change["reduced_call"]} == {"virus", "others"}
    assert report["records_agree"] == report["records"] - 1
    assert report["frames_agree"] == report["frames"] - 1
    text = compare(daemon, tmp_path / "work", str(fasta), *models)
    assert text.returncode == 0, text.stderr
    assert "records whose call changed (1):" in text.stdout
    assert f"  {FLIP_ID}\t{change['fp32_call']}\t" in text.stdout
    assert list((tmp_path / "work").iterdir()) == []


def test_a_refused_job_fails_the_command_and_leaves_no_sample(
    daemon: Daemon, tmp_path: Path
) -> None:
    run = compare(
        daemon, tmp_path / "work", str(EXAMPLE), "--classifier", str(tmp_path / "none.pth")
    )
    assert run.returncode == 4, run.stderr
    assert "none.pth" in run.stderr
    assert list((tmp_path / "work").iterdir()) == []


def _jobs(daemon: Daemon) -> list[dict[str, Any]]:
    return list(daemon.client.result("list")["jobs"])


def test_ctrl_c_kills_the_jobs_and_removes_the_sample(daemon: Daemon, tmp_path: Path) -> None:
    rng = random.Random(4)
    big = tmp_path / "big.fa"
    big.write_text("".join(f">r{i}\n{''.join(rng.choices('ACGT', k=3000))}\n" for i in range(300)))
    before = {job["job_id"] for job in _jobs(daemon)}
    work = tmp_path / "work"
    work.mkdir()
    command = [sys.executable, "-m", "virnuc.client.cli", "--state-dir", str(daemon.state_dir)]
    command += ["compare-precision", str(big), "--profile", "demo", "--work-dir", str(work)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(_jobs(daemon)) == len(before) + 2, 60, "both jobs submitted")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert list(work.iterdir()) == []
    ours = [j for j in _jobs(daemon) if j["job_id"] not in before]
    assert [j["state"] for j in ours] == ["killed", "killed"], ours


# --- on a shared server: virnucd runs as its own user -------------------------------------


@pytest.fixture
def server(unix_users: UnixUsers, demo_cache: Path, tmp_path: Path) -> Iterator[SharedServer]:
    with shared_server(unix_users, demo_cache, tmp_path, "compare") as server:
        server.worker_ready()
        yield server


def test_a_shared_virnucd_is_let_into_the_private_work_dir_alone_within_its_roots(
    server: SharedServer, unix_users: UnixUsers
) -> None:
    """alice's sample lives in a 0700 dir of hers (the sample 0600) that only an ACL
    naming virnucd's user opens; both jobs run on the shared virnucd as hers. A work
    dir outside its input_roots is refused saying how to choose one; an input virnucd's
    user may not read gives it no sample."""
    alice = unix_users.alice
    fasta = server.write_input(alice, "reads.fa", 12)
    area = server.area(alice)
    run = server.ctl_as(alice, "compare-precision", str(fasta), "--profile", "demo", "--json",
                        "--work-dir", str(area))  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["records"] == 12
    assert report["frames"] > 0
    # alice's jobs: only their owner (or an admin) is shown them
    statuses = [server.result_as(alice, "status", job_id=j) for j in report["jobs"].values()]
    assert [(s["state"], s["precision"]) for s in statuses] == [("done", "fp32"), ("done", "bf16")]
    assert sorted(p.name for p in area.iterdir()) == ["reads.fa"]
    outside = server.ctl_as(alice, "compare-precision", str(fasta), "--profile", "demo",
                            "--work-dir", "/tmp")  # fmt: skip
    assert outside.returncode == 4, outside.stderr
    assert "outside the allowed input roots" in outside.stderr
    assert "choose a directory virnucd may read and write" in outside.stderr
    secret = server.write_input(alice, "secret.fa", 3)
    secret.chmod(0o600)  # hers alone: virnucd's user may not read it, nor a sample of it
    refused = server.ctl_as(alice, "compare-precision", str(secret), "--profile", "demo",
                            "--work-dir", str(area))  # fmt: skip
    assert refused.returncode == 4, refused.stderr
    assert f"who may not read {secret}" in refused.stderr
    assert sorted(p.name for p in area.iterdir()) == ["reads.fa", "secret.fa"]
