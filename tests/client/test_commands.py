"""virnucctl's commands against a scripted virnucd (tests/support/fake_daemon.py):
what submit, status, list, kill and workers send, and what they print.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import virnuc.protocol as p
from virnuc.client import cli, commands

from tests.support.fake_daemon import FakeDaemon, job, paged_list, run, sequence

pytestmark = pytest.mark.timeout(30)


def test_submit_prints_only_the_job_id_and_sends_absolute_paths(
    daemon: FakeDaemon,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dnabert-dir").mkdir()
    daemon.handlers["submit"] = lambda r: {"job_id": "job-42"}
    argv = ["submit", "in.fa", "--out", "out", "--classifier", "300_model.pth"]
    argv += ["--esm", "esm2_t6_8M_UR50D", "--dnabert", "dnabert-dir", "--chunk-length", "300"]
    assert run(daemon, *argv, "--checkpoint-every", "5", "--save-embeddings", "--force") == 0
    assert capsys.readouterr().out == "job-42\n"
    (request,) = daemon.requests
    assert request.args == p.SubmitArgs(
        input=str(tmp_path / "in.fa"),
        output=str(tmp_path / "out"),
        classifier=str(tmp_path / "300_model.pth"),
        esm="esm2_t6_8M_UR50D",  # a name, sent as is
        dnabert=str(tmp_path / "dnabert-dir"),  # exists here: a path
        chunk_length=300,
        save_embeddings=True,
        checkpoint_every=5,
        force=True,
    )


def test_submit_of_several_inputs_sends_them_in_order_as_inputs(
    daemon: FakeDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    daemon.handlers["submit"] = lambda r: {"job_id": "j1"}
    assert run(daemon, "submit", "b.fq.gz", "/data/a.fa", "--out", "out", "--profile", "demo") == 0
    assert daemon.requests[0].args == p.SubmitArgs(
        inputs=[str(tmp_path / "b.fq.gz"), "/data/a.fa"],
        output=str(tmp_path / "out"),
        profile="demo",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("zhihan1996/DNABERT-S", "zhihan1996/DNABERT-S"),
        ("esm2_t36_3B_UR50D", "esm2_t36_3B_UR50D"),
        ("models/esm.pt", "{cwd}/models/esm.pt"),
        ("./dnabert", "{cwd}/dnabert"),
        ("/abs/model", "/abs/model"),
    ],
)
def test_model_refs_make_paths_absolute_and_keep_names(
    value: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert commands.model_ref(value) == expected.format(cwd=tmp_path)


def test_submit_demo_profile_prints_the_notice_on_stderr_only(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.handlers["submit"] = lambda r: {"job_id": "j1"}
    assert run(daemon, "submit", "/in.fa", "--out", "/out", "--profile", "demo") == 0
    out, err = capsys.readouterr()
    assert out == "j1\n"
    assert commands.DEMO_NOTICE in err
    assert daemon.requests[0].args == p.SubmitArgs(input="/in.fa", output="/out", profile="demo")


def test_submit_json_prints_exactly_the_result_map(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    result = {"job_id": "j1", "a_field_from_a_newer_daemon": [1, 2]}
    daemon.handlers["submit"] = lambda r: result
    assert run(daemon, "submit", "/in.fa", "--out", "/out", "--json") == 0
    assert json.loads(capsys.readouterr().out) == result


def test_submit_wait_prints_the_id_then_waits(
    daemon: FakeDaemon, fast_polls: None, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.handlers["submit"] = lambda r: {"job_id": "j1"}
    daemon.handlers["status"] = sequence(job(state="queued", done=0), job(state="done", done=10))
    assert run(daemon, "submit", "/in.fa", "--out", "/out", "--wait") == 0
    out, err = capsys.readouterr()
    assert out == "j1\n"
    assert "job j1 done: 10 records, 70 frames" in err


def test_submit_in_a_subprocess_prints_only_the_id(daemon: FakeDaemon) -> None:
    """``JOB=$(virnucctl submit ...)``: stdout is the id and nothing else."""
    daemon.handlers["submit"] = lambda r: {"job_id": "j7"}
    env = {**os.environ, "VIRNUC_STATE_DIR": str(daemon.state_dir)}
    cmd = [sys.executable, "-m", "virnuc.client.cli", "submit", "/in.fa", "--out", "/o"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=20, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "j7\n", "")


def test_status_json_is_the_result_map_unknown_fields_included(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    result = job(state="failed", error="record contig_7 broke the worker", gpu_seconds=1.5)
    daemon.handlers["status"] = lambda r: result
    assert run(daemon, "status", "j1", "--json") == 0
    assert json.loads(capsys.readouterr().out) == result
    assert daemon.requests[0].args == p.StatusArgs("j1")


def test_status_prints_one_line_per_field(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.handlers["status"] = lambda r: job(state="failed", error="disk full", output="/o")
    assert run(daemon, "status", "j1") == 0
    out = capsys.readouterr().out
    assert "state:     failed\nrecords:   3/10 (30.0%)\nframes:    21\n" in out
    assert "error:     disk full" in out


def test_status_follow_shows_progress_until_the_job_ends(
    daemon: FakeDaemon, fast_polls: None, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.handlers["status"] = sequence(job(done=0), job(done=5), job(state="done", done=10))
    assert run(daemon, "status", "j1", "--follow", "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["state"] == "done"
    assert "records 10/10" in err


def test_status_follow_needs_a_job(daemon: FakeDaemon) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(daemon, "status", "--follow")
    assert exit_info.value.code == cli.EXIT_USAGE


@pytest.mark.parametrize("argv", [["list", "--json"], ["status", "--json"]])
def test_list_pages_through_every_job(
    argv: list[str],
    daemon: FakeDaemon,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(commands, "LIST_PAGE", 2)
    jobs = [job(f"j{i}") for i in range(5)]
    daemon.handlers["list"] = paged_list(jobs)
    assert run(daemon, *argv) == 0
    assert json.loads(capsys.readouterr().out) == {"jobs": jobs, "total": 5}
    pages = [p.ListArgs(offset=0, limit=2), p.ListArgs(offset=2, limit=2), p.ListArgs(4, 2)]
    assert [r.args for r in daemon.requests] == pages


def test_list_prints_a_table(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = [job("j1", output="/out/a"), job("j2", state="failed", error="bad input", done=0)]
    daemon.handlers["list"] = paged_list(jobs)
    assert run(daemon, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("JOB  STATE    RECORDS")
    assert lines[1].split() == ["j1", "running", "3/10", "(30.0%)", "21", "0", "-", "-", "/out/a"]
    assert lines[2].split()[:2] == ["j2", "failed"]
    assert lines[2].endswith("bad input")


def test_kill(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.handlers["kill"] = lambda r: {"job_id": "j1", "state": "killed"}
    assert run(daemon, "kill", "j1") == 0
    assert capsys.readouterr().out == "job j1 killed\n"
    assert daemon.requests[0].args == p.KillArgs("j1")


WORKERS = [
    {"id": "w0", "pid": 123, "device": "cuda:0", "state": "busy", "job_id": "j1", "unit": 4},
    {"id": "w1", "pid": None, "device": "cuda:1", "state": "restarting"},
]


def test_workers_json(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.handlers["workers"] = lambda r: {"workers": WORKERS}
    assert run(daemon, "workers", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"workers": WORKERS}


def test_workers_table(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.handlers["workers"] = lambda r: {"workers": WORKERS}
    assert run(daemon, "workers") == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows == [
        ["ID", "PID", "DEVICE", "STATE", "JOB", "UNIT"],
        ["w0", "123", "cuda:0", "busy", "j1", "4"],
        ["w1", "-", "cuda:1", "restarting", "-", "-"],
    ]


def test_submit_models_sends_the_set_s_name(
    daemon: FakeDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    daemon.handlers["submit"] = lambda r: {"job_id": "j1"}
    assert run(daemon, "submit", "in.fa", "--out", "out", "--models", "big") == 0
    (request,) = daemon.requests
    assert request.args == p.SubmitArgs(
        input=str(tmp_path / "in.fa"), output=str(tmp_path / "out"), models="big"
    )


@pytest.mark.parametrize("command", ["submit", "predict"])
def test_models_with_model_options_is_a_usage_error_naming_them(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [command, "in.fa", "--out", "o", "--models", "big", "--classifier", "m.pth"]
    with pytest.raises(SystemExit) as usage:
        cli.main([*argv, "--chunk-length", "500", "--precision", "bf16"])
    assert usage.value.code == 2
    assert "--models NAME chooses the models: leave out --classifier, --chunk-length" in (
        capsys.readouterr().err
    )
