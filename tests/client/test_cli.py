"""virnucctl against a fake virnucd: real sockets over ipc://, scripted answers.

The fake daemon is a thread of the test holding a ROUTER (control) and a PUB (events)
in a temporary state dir. It answers with ``virnuc.protocol``'s helpers, so these
tests check virnucctl's side of the documented contract: what it sends, what it
prints, and which exit status each outcome gives. The real daemon's end-to-end tests
live with the daemon.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import zmq

import virnuc.protocol as p
from virnuc.client import cli, commands, follow, private_daemon
from virnuc.client.connection import DaemonAddress, DaemonClient
from virnuc.client.errors import DaemonUnreachable
from virnuc.client.progress import ProgressLine

pytestmark = pytest.mark.timeout(30)


@dataclass
class Fail:
    """A scripted error reply."""

    code: p.ErrorCode
    message: str


Handler = Callable[[p.Request], "dict[str, Any] | Fail | None"]  # None: no reply at all


def job(job_id: str = "j1", state: str = "running", done: int = 3, **extra: Any) -> dict[str, Any]:
    """A JobStatus map as the daemon sends it."""
    return {
        "job_id": job_id,
        "state": state,
        "records_total": 10,
        "records_done": done,
        "frames_done": done * 7,
        "restarts": 0,
        **extra,
    }


@dataclass
class FakeDaemon:
    """A scripted virnucd: ``handlers[op]`` answers requests, ``events`` are re-published.

    Events are sent again on every loop turn (about every 10 ms) because PUB/SUB drops
    whatever is published before a subscription arrives; the client must cope with
    both lost and repeated events anyway.
    """

    state_dir: Path
    silent: bool = False  # bind, but never answer: the client must time out
    handlers: dict[str, Handler] = field(default_factory=dict)
    events: list[list[bytes]] = field(default_factory=list)
    requests: list[p.Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def control(self) -> str:
        return f"ipc://{self.state_dir}/control.sock"

    def ops(self) -> list[str]:
        return [r.op.value for r in self.requests]

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(5), "fake daemon did not bind"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive()

    def _serve(self) -> None:
        ctx = zmq.Context()
        router, pub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB)
        try:
            for sock in (router, pub):
                sock.setsockopt(zmq.LINGER, 0)
            router.bind(self.control)
            pub.bind(f"ipc://{self.state_dir}/events.sock")
            self._ready.set()
            while not self._stop.is_set():
                if router.poll(10, zmq.POLLIN):
                    self._answer(router)
                for frames in list(self.events):
                    pub.send_multipart(frames)
        finally:
            router.close()
            pub.close()
            ctx.term()

    def _answer(self, router: zmq.Socket[bytes]) -> None:
        routing, payload = p.split_request_frames(router.recv_multipart())
        request = p.decode_request(payload)
        self.requests.append(request)
        if self.silent:
            return
        answer = self.handlers.get(request.op.value, lambda r: {})(request)
        if answer is None:  # like a paused or busy virnucd: the client's timeout runs out
            return
        if isinstance(answer, Fail):
            reply = p.error_reply(request.id, answer.code, answer.message)
        else:
            reply = p.ok_reply(request.id, answer)
        router.send_multipart(p.reply_frames(routing, p.encode(reply)))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(tmp_path / "state")
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Poll ``status`` every 10 ms: the test is then driven by polls, not events."""
    monkeypatch.setattr(follow, "POLL_INTERVAL", 0.01)


@pytest.fixture
def no_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Poll only once a minute: only an event can end the test in time."""
    monkeypatch.setattr(follow, "POLL_INTERVAL", 60.0)


def event(kind: p.JobEventKind, status: dict[str, Any]) -> list[bytes]:
    """A job event's frames, as the daemon publishes them."""
    return p.job_event(kind, cast(p.JobStatus, status))


def run(daemon: FakeDaemon, *argv: str) -> int:
    return cli.main(["--state-dir", str(daemon.state_dir), *argv])


def sequence(*answers: dict[str, Any] | Fail | None) -> Handler:
    """Answer with each of ``answers`` in turn, then keep repeating the last."""
    queue = list(answers)

    def handler(request: p.Request) -> dict[str, Any] | Fail | None:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler


# --- submit ------------------------------------------------------------------------------


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


def test_status_of_a_job_with_several_inputs_lists_each_on_its_own_line() -> None:
    from virnuc.client.output import job_lines

    status = {
        "job_id": "j1",
        "state": "done",
        "records_total": 3,
        "records_done": 3,
        "frames_done": 9,
        "restarts": 0,
        "input": "/a.fa",
        "inputs": ["/a.fa", "/b.fq"],
        "output": "/out",
    }
    lines = job_lines(status).splitlines()
    at = lines.index("input:    /a.fa")
    assert lines[at + 1].split() == ["/b.fq"]
    assert lines[at + 2].startswith("output:")


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


# --- status, list, kill, workers -----------------------------------------------------------


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
    assert "state:    failed\nrecords:  3/10 (30.0%)\nframes:   21\n" in out
    assert "error:    disk full" in out


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


def paged_list(jobs: list[dict[str, Any]]) -> Handler:
    def handler(request: p.Request) -> dict[str, Any]:
        assert isinstance(request.args, p.ListArgs)
        end = None if request.args.limit is None else request.args.offset + request.args.limit
        return {"jobs": jobs[request.args.offset : end], "total": len(jobs)}

    return handler


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
    assert lines[1].split() == ["j1", "running", "3/10", "(30.0%)", "21", "0", "/out/a"]
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


# --- wait: events and polls ------------------------------------------------------------------


@pytest.mark.parametrize(("state", "code"), [("done", 0), ("failed", 1), ("killed", 1)])
def test_wait_is_ended_by_an_event(
    state: str,
    code: int,
    daemon: FakeDaemon,
    no_polls: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``status`` says running forever; only the state event can end the wait."""
    daemon.handlers["status"] = lambda r: job(done=0)
    final = job(state=state, done=10, error="worker w0 gave up on unit 3")
    daemon.events.append(event("progress", job(done=6)))
    daemon.events.append(event("state", final))
    daemon.events.append(event("state", job("other", state="done")))
    assert run(daemon, "wait", "j1") == code
    err = capsys.readouterr().err
    if state == "failed":
        assert "virnucctl: error: job j1 failed: worker w0 gave up on unit 3" in err
    assert daemon.ops() == ["status"]


@pytest.mark.parametrize(("state", "code"), [("done", 0), ("failed", 1)])
def test_wait_is_ended_by_polling_when_no_event_comes(
    state: str,
    code: int,
    daemon: FakeDaemon,
    fast_polls: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    daemon.handlers["status"] = sequence(job(done=0), job(done=4), job(state=state, done=10))
    assert run(daemon, "wait", "j1") == code
    assert daemon.ops() == ["status"] * 3
    assert "records 10/10" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error_code", "exit_code"), [("invalid_input", 4), ("conflict", 4), (None, 1)]
)
def test_wait_exits_4_for_a_job_whose_input_is_to_blame_else_1(
    error_code: str | None, exit_code: int, daemon: FakeDaemon, fast_polls: None
) -> None:
    extra = {"error_code": error_code} if error_code else {}
    failed = job(state="failed", done=4, error="planning: record 5: not DNA", **extra)
    daemon.handlers["status"] = sequence(job(done=1), failed)
    assert run(daemon, "wait", "j1") == exit_code


def test_wait_json_prints_the_final_status(
    daemon: FakeDaemon, fast_polls: None, capsys: pytest.CaptureFixture[str]
) -> None:
    final = job(state="done", done=10, output="/out")
    daemon.handlers["status"] = sequence(job(done=1), final)
    assert run(daemon, "wait", "j1", "--json") == 0
    assert json.loads(capsys.readouterr().out) == final


def test_wait_asks_again_when_a_poll_goes_unanswered(
    daemon: FakeDaemon, fast_polls: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A paused or busy virnucd: each unanswered poll times out and is asked again."""
    daemon.handlers["status"] = sequence(job(done=0), None, None, job(state="done", done=10))
    assert run(daemon, "--timeout", "0.2", "wait", "j1") == 0
    assert daemon.ops() == ["status"] * 4
    err = capsys.readouterr().err
    assert err.count("within 0.2 s; asking again for up to 120 s") == 1  # once per silence
    assert "job j1 done: 10 records" in err


def test_wait_gives_up_with_exit_3_once_silent_for_its_deadline(
    daemon: FakeDaemon, fast_polls: None, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.handlers["status"] = sequence(job(done=0), None)  # answers once, then silence
    started = time.monotonic()
    argv = ["--timeout", "0.2", "wait", "j1", "--give-up-after", "0.7"]
    assert run(daemon, *argv) == cli.EXIT_UNREACHABLE
    assert time.monotonic() - started >= 0.7
    assert daemon.ops().count("status") >= 1 + 4  # 0.2 + 0.2 + 0.2 + the last 0.1 s
    err = capsys.readouterr().err
    assert f"no answer from virnucd at {daemon.control} for 0.7 s (" in err
    assert "is virnucd running?" in err


def test_a_poll_is_not_asked_again_when_the_daemon_is_gone(tmp_path: Path) -> None:
    """No socket file (virnucd stopped or was killed): exit 3 at once, no retries."""
    calls = []

    class GoneDaemon:
        timeout, endpoint = 0.2, f"ipc://{tmp_path}/control.sock"

        def call(self, args: p.OpArgs, timeout: float | None = None) -> dict[str, Any]:
            calls.append(args)
            raise DaemonUnreachable(self.endpoint, "no virnucd there")

    client = cast(DaemonClient, GoneDaemon())
    with pytest.raises(DaemonUnreachable):
        follow.poll_status(client, "j1", give_up_after=60)
    assert calls == [p.StatusArgs("j1")]


# --- errors and exit codes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        (p.ErrorCode.NOT_FOUND, 4),
        (p.ErrorCode.INVALID_INPUT, 4),
        (p.ErrorCode.CONFLICT, 4),
        (p.ErrorCode.FORBIDDEN, 4),
        (p.ErrorCode.STOPPING, 5),
        (p.ErrorCode.INTERNAL, 1),
        (p.ErrorCode.BAD_REQUEST, 1),
    ],
)
def test_error_replies_map_to_exit_codes(
    code: p.ErrorCode, exit_code: int, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.handlers["status"] = lambda r: Fail(code, "no job 'j9'")
    assert run(daemon, "status", "j9") == exit_code
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("virnucctl: error: ")
    assert "no job 'j9'" in err
    assert "Traceback" not in err


def test_invalid_input_message_names_the_file(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    message = "input /data/x.fa: record 3 has no sequence"
    daemon.handlers["submit"] = lambda r: Fail(p.ErrorCode.INVALID_INPUT, message)
    assert run(daemon, "submit", "/data/x.fa", "--out", "/o") == 4
    assert capsys.readouterr().err == f"virnucctl: error: {message}\n"


def test_no_socket_file_is_unreachable_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "nothing-here"
    assert cli.main(["--state-dir", str(state), "list"]) == 3
    err = capsys.readouterr().err
    assert f"ipc://{state}/control.sock" in err
    assert f"Start it with: virnucd --state-dir {state}" in err


def test_stale_socket_file_is_unreachable_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A virnucd that was killed leaves its socket file; nothing listens on it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(tmp_path / "control.sock"))
    assert cli.main(["--state-dir", str(tmp_path), "list"]) == 3
    assert "stale socket file" in capsys.readouterr().err


def test_silent_daemon_is_unreachable_after_the_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeDaemon(tmp_path / "state", silent=True)
    fake.start()
    try:
        assert run(fake, "--timeout", "0.2", "workers") == 3
    finally:
        fake.stop()
    state = fake.state_dir
    assert capsys.readouterr().err == (
        f"virnucctl: error: no answer from virnucd at ipc://{state}/control.sock within 0.2 s"
        f" — is virnucd running? Start it with: virnucd --state-dir {state}"
        f" (state dir: {state}, from --state-dir)\n"
    )


def test_explicit_endpoint_gets_its_own_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"ipc://{tmp_path}/elsewhere.sock"
    assert cli.main(["--endpoint", endpoint, "list"]) == 3
    err = capsys.readouterr().err
    assert endpoint in err
    assert "listening there" in err


def test_malformed_reply_is_an_error_not_a_traceback(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.handlers["status"] = lambda r: {"job_id": "j1", "state": "exploded"}
    assert run(daemon, "status", "j1") == 1
    assert "malformed reply" in capsys.readouterr().err


# --- finding the daemon ------------------------------------------------------------------------


def test_state_dir_from_the_environment(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VIRNUC_STATE_DIR", str(daemon.state_dir))
    daemon.handlers["workers"] = lambda r: {"workers": []}
    assert cli.main(["workers"]) == 0
    assert capsys.readouterr().out == "no workers\n"


def test_options_may_follow_the_command(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.handlers["kill"] = lambda r: {"job_id": "j1", "state": "killed"}
    assert cli.main(["kill", "j1", "--state-dir", str(daemon.state_dir), "--timeout", "5"]) == 0


def test_address_resolution_order(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    xdg = DaemonAddress.resolve(None, None, None, env)
    assert xdg.control == f"ipc://{tmp_path}/xdg/virnuc/control.sock"
    assert xdg.events == f"ipc://{tmp_path}/xdg/virnuc/events.sock"
    env["VIRNUC_STATE_DIR"] = str(tmp_path / "env")
    assert DaemonAddress.resolve(None, None, None, env).state_dir == tmp_path / "env"
    flag = DaemonAddress.resolve(str(tmp_path / "flag"), None, None, env)
    assert flag.source == "--state-dir"
    tcp = DaemonAddress.resolve(str(tmp_path), "tcp://h:5555", None, env)
    assert (tcp.control, tcp.events, tcp.state_dir) == ("tcp://h:5555", None, None)
    ipc = DaemonAddress.resolve(None, "ipc:///s/control.sock", None, env)
    assert ipc.events == "ipc:///s/events.sock"
    home = DaemonAddress.resolve(None, None, None, {})
    assert home.state_dir == Path.home() / ".local/state/virnuc"


@pytest.mark.parametrize("argv", [["status"], ["list", "--json"]])
def test_output_into_a_closed_pipe_ends_quietly_with_141(
    argv: list[str], daemon: FakeDaemon
) -> None:
    """``virnucctl status | head -3``: head has gone when virnucctl writes. The pipe's
    read end is closed before virnucctl starts, so every write to stdout fails."""
    daemon.handlers["list"] = paged_list([job(f"j{i}") for i in range(3)])
    env = {**os.environ, "VIRNUC_STATE_DIR": str(daemon.state_dir)}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "virnuc.client.cli", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            timeout=20,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")  # 128 + SIGPIPE, as a shell says of `cat`
    assert cli.EXIT_BROKEN_PIPE == 141


def test_help_lists_the_exit_codes() -> None:
    text = cli.build_parser().format_help()
    assert "Exit codes" in text
    assert "3    virnucd did not answer" in text


# --- predict: the private daemon's life ---------------------------------------------------------


def test_daemon_command() -> None:
    assert private_daemon.daemon_command(Path("/s"), "cuda:0", 2, 50) == [
        sys.executable,
        "-m",
        "virnuc.daemon.main",
        "--state-dir",
        "/s",
        "--device",
        "cuda:0",
        "--workers",
        "2",
        "--checkpoint-every",
        "50",
    ]


def test_predict_shows_the_log_and_cleans_up_when_the_daemon_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "private"
    state.mkdir()
    monkeypatch.setattr(private_daemon, "make_state_dir", lambda: state)
    dying = [sys.executable, "-c", "import sys; print('cannot open /dev/nvidia0'); sys.exit(7)"]
    monkeypatch.setattr(private_daemon, "daemon_command", lambda *a: dying)
    assert cli.main(["predict", "/in.fa", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "virnucd exited with status 7 before answering" in err
    assert "cannot open /dev/nvidia0" in err
    assert not state.exists()


def test_predict_runs_a_job_shuts_the_daemon_down_and_cleans_up(
    daemon: FakeDaemon,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """The fake answers for the daemon; the process predict starts only waits to be
    killed, so the grace period runs out and the SIGKILL path is taken too."""
    monkeypatch.setattr(private_daemon, "make_state_dir", lambda: daemon.state_dir)
    monkeypatch.setattr(private_daemon, "SHUTDOWN_GRACE", 0.1)
    pids: list[int] = []
    real_popen = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        child = real_popen(*args, **kwargs)
        pids.append(child.pid)
        return child

    monkeypatch.setattr(private_daemon.subprocess, "Popen", popen)
    idle = [sys.executable, "-c", "import signal; signal.pause()"]
    monkeypatch.setattr(private_daemon, "daemon_command", lambda *a: idle)
    daemon.handlers["submit"] = lambda r: {"job_id": "j1"}
    daemon.handlers["status"] = lambda r: job(done=2)
    daemon.events.append(event("state", job(state="done", done=10, output="/o")))
    out = tmp_path / "out"
    argv = ["predict", "in.fa", "--out", str(out), "--profile", "demo", "--workers", "2"]
    assert cli.main(argv) == 0
    stdout, stderr = capsys.readouterr()
    assert stdout == f"done: 10 records, 70 frames -> {out}\n"
    assert commands.DEMO_NOTICE in stderr
    assert daemon.ops() == ["ping", "submit", "status", "shutdown"]
    assert daemon.requests[1].args == p.SubmitArgs(
        input=os.path.abspath("in.fa"), output=str(out), profile="demo"
    )
    assert not daemon.state_dir.exists()
    with pytest.raises(ChildProcessError):  # killed and reaped
        os.waitpid(pids[0], os.WNOHANG)


def test_predict_failed_job_exits_1_and_shows_the_log(
    daemon: FakeDaemon,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(private_daemon, "make_state_dir", lambda: daemon.state_dir)
    monkeypatch.setattr(private_daemon, "SHUTDOWN_GRACE", 0.1)
    idle = [sys.executable, "-c", "import signal; signal.pause()"]
    monkeypatch.setattr(private_daemon, "daemon_command", lambda *a: idle)
    daemon.handlers["submit"] = lambda r: {"job_id": "j1"}
    daemon.handlers["status"] = lambda r: job(state="failed", error="worker gave up")
    assert cli.main(["predict", "/in.fa", "--out", "/o", "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["state"] == "failed"
    assert "virnucctl: error: job j1 failed: worker gave up" in err
    assert "the end of virnucd's log" in err
    assert not daemon.state_dir.exists()


def test_predict_of_an_invalid_input_exits_4(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(private_daemon, "make_state_dir", lambda: daemon.state_dir)
    monkeypatch.setattr(private_daemon, "SHUTDOWN_GRACE", 0.1)
    idle = [sys.executable, "-c", "import signal; signal.pause()"]
    monkeypatch.setattr(private_daemon, "daemon_command", lambda *a: idle)
    daemon.handlers["submit"] = lambda r: {"job_id": "j1"}
    failed = job(state="failed", error="invalid input: line 3: not DNA", error_code="invalid_input")
    daemon.handlers["status"] = lambda r: failed
    assert cli.main(["predict", "/in.fa", "--out", "/o"]) == 4


def test_private_daemon_is_cleaned_up_after_ctrl_c(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(private_daemon, "make_state_dir", lambda: daemon.state_dir)
    monkeypatch.setattr(private_daemon, "SHUTDOWN_GRACE", 0.1)
    idle = [sys.executable, "-c", "import signal; signal.pause()"]
    monkeypatch.setattr(private_daemon, "daemon_command", lambda *a: idle)
    private = private_daemon.PrivateDaemon("cpu", 1, None, timeout=5)
    with pytest.raises(KeyboardInterrupt), private:
        raise KeyboardInterrupt
    assert private.process is not None
    assert private.process.returncode == -9  # ignored the shutdown op: killed after the grace
    assert daemon.ops() == ["ping", "shutdown"]
    assert not daemon.state_dir.exists()
    assert "interrupt again to kill it" in capsys.readouterr().err


# --- the progress line ------------------------------------------------------------------------


def test_progress_line_without_a_tty_prints_plain_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bar = ProgressLine(sys.stderr)
    bar.update(0, 0, 0, state="queued")
    bar.update(5, 10, 30)  # within 10 s of the last line: skipped
    bar.update(10, 10, 60, state="done", force=True)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert "records 0/?" in lines[0]
    assert "queued" in lines[0]
    assert "100.0%" in lines[1]
    assert "records 10/10  frames 60" in lines[1]
