"""A shared server whose users cannot reach each other (issue 22), end to end.

A real virnucd runs as its own Unix user with a config like systemd/virnucd.toml
(tests/support/shared_daemon.py); real users talk to it: alice and bob (members of
its `group`), eve (not a member), carol (in `admin_group`). Each test makes one of
the issue's findings happen for real and asserts the fixed behaviour:

1. no code from a model directory runs; model paths outside model_roots are refused;
2. a member cannot make virnucd read a file she could not read herself;
3. the state dir is private: its sockets are reachable, nothing else in it;
4. a member cannot make virnucd write where she could not write;
5. an output dir swapped for a symlink while the job runs is never written through;
6. a member sees and acts on her own jobs only; only admins stop virnucd;
7. a member owns what virnucd writes for her; a small job is not stuck behind a big one.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virnuc.pipeline.output_format import RUN_INFO
from virnuc.pipeline.outputs import OUTPUT_NAMES, PREDICTIONS
from virnuc.pipeline.report import PLOT, REPORT

from tests.support.file_modes import mode
from tests.support.poll import wait_for
from tests.support.shared_daemon import JsonLines, SharedServer, shared_server
from tests.support.unix_users import UnixUsers
from tests.support.user_scripts import (
    CONNECT,
    FORGED_ZMTP,
    MARKER_CODE,
    READ_EVERY_PATH,
    SUBSCRIBER,
    SWAP,
)

FORBIDDEN, NOT_FOUND = "forbidden", "not_found"


@pytest.fixture(scope="module")
def server(
    unix_users: UnixUsers, demo_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedServer]:
    logs = tmp_path_factory.mktemp("shared-server-logs")
    with shared_server(unix_users, demo_cache, logs, "shared") as server:
        server.worker_ready()
        yield server


@pytest.fixture
def stoppable(unix_users: UnixUsers, demo_cache: Path, tmp_path: Path) -> Iterator[SharedServer]:
    """A virnucd of its own, for the tests a wrongly obeyed shutdown would end."""
    with shared_server(unix_users, demo_cache, tmp_path, "stoppable") as server:
        yield server


@pytest.fixture
def users(unix_users: UnixUsers) -> UnixUsers:
    return unix_users


# --- 1. no code from model directories ----------------------------------------------------


def demo_models_but_dnabert(server: SharedServer, dnabert: Path) -> dict[str, Any]:
    """The submit arguments for the demo's models, with this DNABERT-S dir instead."""
    demo = server.models / "demo-v2"
    return {
        "esm": str(demo / "esm2_t2_demo.pt"),
        "classifier": str(demo / "classifier.pth"),
        "chunk_length": 300,
        "dnabert": str(dnabert),
    }


def alice_model_dir(server: SharedServer, parent: Path, marker: Path, auto_model: str) -> Path:
    """The demo DNABERT-S dir, alice's own, whose every .py file (and one that
    `auto_model` names) leaves `marker` behind when imported."""
    alice = server.users.alice
    model = parent / "dnabert"
    shutil.copytree(server.models / "demo-v2" / "dnabert", model)
    code = MARKER_CODE.format(marker=str(marker))
    for name in ["bert_layers.py", "configuration_bert.py", "evil_model.py"]:
        (model / name).write_text(code)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_bert.BertConfig",
        "AutoModel": auto_model,
    }
    (model / "config.json").write_text(json.dumps(config))
    for path in [parent, *parent.rglob("*")]:
        os.chown(path, alice.uid, alice.gid)
    return model


@pytest.mark.parametrize("auto_model", ["bert_layers.BertModel", "evil_model.EvilModel"])
def test_no_code_from_a_model_dir_runs(
    server: SharedServer, users: UnixUsers, tmp_path_factory: pytest.TempPathFactory,
    auto_model: str,
) -> None:  # fmt: skip
    alice = users.alice
    markers = server.root / f"markers-{auto_model.split('.')[0]}"
    markers.mkdir(mode=0o1777)
    markers.chmod(0o1777)  # if any code of hers ran, as virnucd, it could write here
    marker = markers / "ran"
    mine = server.give(server.models / f"alice-{auto_model.split('.')[0]}", alice, 0o755)
    model = alice_model_dir(server, mine, marker, auto_model)
    fasta = server.write_input(alice, f"code-{auto_model}.fa", 5)
    out = server.area(alice) / f"code-{auto_model}"
    models = demo_models_but_dnabert(server, model)
    reply = server.call_as(alice, "submit", inputs=[str(fasta)], output=str(out), **models)
    if reply["ok"]:  # virnuc's vendored code, or a job failing on the custom code
        status = server.wait_end(reply["result"]["job_id"])
        if auto_model != "bert_layers.BertModel":
            assert status["state"] == "failed", status
            assert "custom model code" in status["error"], status
    else:
        assert "code" in reply["error"]["message"], reply
    assert not marker.exists(), "code from alice's model dir ran in virnucd's worker"


def test_a_model_outside_model_roots_is_forbidden(server: SharedServer, users: UnixUsers) -> None:
    alice = users.alice
    outside = server.area(alice) / "my-models"
    shutil.copytree(server.models / "demo-v2" / "dnabert", outside / "dnabert")
    fasta = server.write_input(alice, "outside.fa", 5)
    error = server.error_as(
        alice,
        "submit",
        inputs=[str(fasta)],
        output=str(server.area(alice) / "outside-out"),
        **demo_models_but_dnabert(server, outside / "dnabert"),
    )
    assert error["code"] == FORBIDDEN, error
    assert str(outside / "dnabert") in error["message"]


# --- 2. the confused deputy: reading --------------------------------------------------------


def test_a_member_cannot_submit_a_file_she_cannot_read(
    server: SharedServer, users: UnixUsers
) -> None:
    """bob's input is 0640, its group virnucd's own: virnucd could read it, alice not."""
    alice, bob = users.alice, users.bob
    secret = server.write_input(bob, "secret.fa", 5, seed=22)
    assert users.run_as(alice, ["cat", str(secret)]).returncode != 0  # as the kernel says
    mine = server.write_input(alice, "mine.fa", 5)
    for inputs in ([secret], [mine, secret]):
        out = server.area(alice) / f"stolen-{len(inputs)}"
        error = server.error_as(
            alice, "submit", inputs=[str(p) for p in inputs], output=str(out), profile="demo"
        )
        assert error["code"] == FORBIDDEN, error
        assert str(secret) in error["message"]
        assert not out.exists()  # no job: nothing of bob's anywhere
    jobs = server.result_as(alice, "list")["jobs"]
    assert not [job for job in jobs if str(secret) in job.get("inputs", [])]


# --- 3. the state dir -----------------------------------------------------------------------


def test_members_reach_the_sockets_and_nothing_else_of_the_state_dir(
    server: SharedServer, users: UnixUsers
) -> None:
    alice, group = users.alice, grp.getgrnam(users.group).gr_gid
    fasta = server.write_input(alice, "state.fa", 200)
    job = server.submit_as(alice, [fasta], server.area(alice) / "state-out")  # reachable
    server.wait_busy_with(job, unit=1)  # unit 0's part is on disk
    with server.paused_worker():
        paths = [p for p in server.state_dir.rglob("*") if not p.is_socket()]
        parts = [p for p in (server.state_dir / "jobs").rglob("*") if p.is_file()]
        assert parts, "no part on disk to try"
        assert {mode(p) for p in parts} == {0o600}  # the worker's umask too
        assert (mode(server.state_dir), server.state_dir.stat().st_gid) == (0o710, group)
        for name in ("control.sock", "events.sock"):
            assert mode(server.state_dir / name) == 0o660
        seen = server.python_as(alice, READ_EVERY_PATH, *_argv(server.state_dir, paths))
        assert seen.returncode == 0, seen.stderr
        found = json.loads(seen.stdout)
        assert found.pop("list") == "denied"
        assert found.pop(str(server.state_dir / "virnuc.db")) == "denied"
        gone = "FileNotFoundError"  # removed meanwhile (a checkpoint of SQLite's): fine
        assert {path: how for path, how in found.items() if how not in ("denied", gone)} == {}
        shown = server.ctl_as(alice, "status", job, "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["job_id"] == job
    assert server.wait_end(job)["state"] == "done"


def _argv(state_dir: Path, paths: list[Path]) -> list[str]:
    return [str(state_dir), *(str(p) for p in paths)]


def test_a_non_member_cannot_connect(server: SharedServer, users: UnixUsers) -> None:
    eve = users.eve
    for name in ("control.sock", "events.sock"):
        tried = server.python_as(eve, CONNECT, str(server.state_dir / name))
        assert tried.stdout.strip() == "denied", tried.stdout + tried.stderr
    listed = server.ctl_as(eve, "list")
    assert listed.returncode == 3, listed.stdout + listed.stderr  # did not answer
    assert "permission denied" in listed.stderr
    assert "Traceback" not in listed.stderr


# --- 4. the confused deputy: writing --------------------------------------------------------


def test_a_member_cannot_write_into_another_members_dir(
    server: SharedServer, users: UnixUsers
) -> None:
    """bob's dir: virnucd may write there (its group), alice may only look."""
    alice, bob = users.alice, users.bob
    fasta = server.write_input(alice, "writes.fa", 5)
    error = server.error_as(
        alice, "submit", inputs=[str(fasta)], output=str(server.area(bob) / "from-alice"),
        profile="demo",
    )  # fmt: skip
    assert error["code"] == FORBIDDEN, error
    assert not (server.area(bob) / "from-alice").exists()

    results = server.area(bob) / "results"
    bobs = server.write_input(bob, "bobs.fa", 5)
    assert server.wait_end(server.submit_as(bob, [bobs], results))["state"] == "done"
    # run_info.json, then the report, are written after `done`: wait for the last
    wait_for((results / REPORT).exists, 60, "bob's report, made after `done`")
    before = _contents(results)
    error = server.error_as(
        alice, "submit", inputs=[str(fasta)], output=str(results), profile="demo", force=True
    )
    assert error["code"] == FORBIDDEN, error
    assert str(results) in error["message"]
    assert _contents(results) == before


def _contents(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir() if p.is_file()
    }


# --- 5. a symlink swapped in while the job runs ---------------------------------------------


@pytest.mark.parametrize("target", ["state-dir", "bobs-dir"])
def test_an_output_dir_swapped_for_a_symlink_is_not_written_through(
    server: SharedServer, users: UnixUsers, target: str
) -> None:
    alice = users.alice
    aim = server.state_dir if target == "state-dir" else server.area(users.bob)
    out = server.area(alice) / f"swapped-{target}"
    made = users.run_as(alice, ["mkdir", "-m", "0770", str(out)])  # hers, virnucd's group
    assert made.returncode == 0, made.stderr
    fasta = server.write_input(alice, f"swap-{out.name}.fa", 5)
    before = {p.name for p in aim.iterdir()}
    with server.paused_worker():  # the job waits: a real stall of its only worker
        job = server.submit_as(alice, [fasta], out)
        swapped = server.python_as(alice, SWAP, str(out), str(aim))
        assert swapped.returncode == 0, swapped.stderr
    status = server.wait_end(job)
    assert status["state"] == "failed", status
    assert str(out) in status["error"], status
    new = [p.name for p in aim.iterdir() if p.name not in before]
    assert [name for name in new if is_output(name)] == [], "written through the symlink"


def is_output(name: str) -> bool:
    """A result file, or a temporary one on its way there."""
    return name in (*OUTPUT_NAMES, RUN_INFO, REPORT, PLOT) or name.endswith(".partial")


# --- 6. owners ------------------------------------------------------------------------------


def test_a_member_sees_and_kills_only_her_own_jobs(server: SharedServer, users: UnixUsers) -> None:
    alice, bob = users.alice, users.bob
    with server.paused_worker():
        hers = server.submit_new(alice, "own-a", 5)
        his = server.submit_new(bob, "own-b", 5)
        unknown = server.error_as(bob, "status", job_id="00000000")
        for op in ("status", "kill"):
            error = server.error_as(bob, op, job_id=hers)
            assert error["code"] == NOT_FOUND == unknown["code"], error
            assert hers in error["message"]
        listed = server.result_as(bob, "list")
        ids = [job["job_id"] for job in listed["jobs"]]
        assert his in ids
        assert hers not in ids
        assert listed["total"] == len(ids)
        assert server.result_as(bob, "status", job_id=his)["job_id"] == his
        assert server.result_as(alice, "status", job_id=hers)["job_id"] == hers
    for job in (hers, his):
        assert server.wait_end(job)["state"] == "done"
    assert server.log_mentions("kill", bob), "bob's refused kill is not logged with him"
    assert server.log_mentions("submit", alice, hers), "alice's submit is not logged with her"


def test_workers_show_a_member_no_job_of_another(server: SharedServer, users: UnixUsers) -> None:
    alice, bob = users.alice, users.bob
    hers = server.submit_new(alice, "busy", 100)
    server.wait_busy_with(hers)
    with server.paused_worker():  # still busy with hers while bob and carol look
        shown = server.result_as(bob, "workers")["workers"]
        assert shown, "bob sees no worker at all"
        assert not [w for w in shown if w.get("job_id") == hers], shown
        assert [w for w in server.result_as(server.admin, "workers")["workers"]
                if w.get("job_id") == hers]  # fmt: skip
    assert server.wait_end(hers)["state"] == "done"


def test_a_members_event_subscription_carries_no_event_of_another(
    server: SharedServer, users: UnixUsers
) -> None:
    alice, bob = users.alice, users.bob
    with contextlib.ExitStack() as listening:
        with server.paused_worker():  # hers waits until bob listens
            hers = server.submit_new(alice, "ev-a", 20)
            topics = ["", f"job.{hers}."]
            listener = server.popen_python_as(bob, SUBSCRIBER, server.events, *topics)
            seen = listening.enter_context(JsonLines(listener))
            wait_for(lambda: {"ready": True} in seen.lines, 30, "bob's subscriber to connect")
        assert server.wait_end(hers)["state"] == "done"
        # bob's own job, after hers, which he follows: once its end reaches him, every
        # earlier event has (a socket's events reach each subscriber in order).
        with server.paused_worker():
            his = server.submit_new(bob, "ev-b", 5)
            assert listener.stdin is not None
            listener.stdin.write(f"job.{his}.\n")
            listener.stdin.flush()
        assert server.wait_end(his)["state"] == "done"
        his_end = {"topic": f"job.{his}.state", "state": "done", "job_id": his}
        wait_for(lambda: his_end in seen.lines, 60, "bob's subscriber to see his job end")
    leaked = [event for event in seen.lines if hers in json.dumps(event)]
    assert leaked == [], f"bob received alice's events: {leaked}"


def test_a_member_cannot_stop_virnucd(stoppable: SharedServer, users: UnixUsers) -> None:
    server = stoppable
    error = server.error_as(users.bob, "shutdown")
    assert error["code"] == FORBIDDEN, error
    assert server.running()
    assert server.client.call("ping")["ok"]
    assert server.log_mentions("shutdown", users.bob), "the refused shutdown is not logged"
    assert server.result_as(server.admin, "shutdown") == {}  # an admin may
    assert server.process is not None
    assert server.process.wait(90) == 0, server.log_tail()
    assert server.log_mentions("shutdown", server.admin), "the shutdown is not logged"


def test_an_admin_sees_and_kills_every_job(server: SharedServer, users: UnixUsers) -> None:
    alice, bob, carol = users.alice, users.bob, server.admin
    with server.paused_worker():
        hers = server.submit_new(alice, "adm-a", 5)
        his = server.submit_new(bob, "adm-b", 5)
        assert server.result_as(carol, "status", job_id=hers)["job_id"] == hers
        ids = [job["job_id"] for job in server.result_as(carol, "list")["jobs"]]
        assert hers in ids
        assert his in ids
        assert server.result_as(carol, "kill", job_id=hers)["state"] == "killed"
    assert server.wait_end(hers)["state"] == "killed"
    assert server.wait_end(his)["state"] == "done"
    assert server.log_mentions("kill", carol, hers), "carol's kill is not logged with her"


def test_a_user_id_forged_in_the_handshake_is_ignored(
    stoppable: SharedServer, users: UnixUsers
) -> None:
    """bob's own ZMTP client claims to be root, carol, or a sealed admin Caller."""
    server = stoppable
    bob, carol = users.bob, server.admin
    hers = server.submit_new(users.alice, "forge", 5)
    sealed = {"owner": "uid:0", "uid": 0, "gid": 0, "admin": True, "label": "root", "pid": 1}
    forged = ["root", "0", f"uid:{carol.uid}", json.dumps(sealed) + "|" + "0" * 64]
    done = server.python_as(bob, FORGED_ZMTP, str(server.state_dir / "control.sock"), *forged)
    assert done.returncode == 0, done.stderr
    for claim, answers in json.loads(done.stdout).items():
        refused = answers["shutdown"].get("error") or {}
        assert refused.get("code") == FORBIDDEN, f"{claim!r}: {answers}"
        assert answers["list"]["ok"], (claim, answers)
        assert hers not in json.dumps(answers["list"]), (claim, answers)
    assert server.running()
    assert server.client.call("ping")["ok"]


# --- 7. outputs and fairness ----------------------------------------------------------------


def test_a_member_owns_her_outputs(server: SharedServer, users: UnixUsers) -> None:
    alice = users.alice
    out = server.area(alice) / "mine"
    job = server.submit_as(alice, [server.write_input(alice, "mine.fa", 5)], out)
    assert server.wait_end(job)["state"] == "done"
    renamed = users.run_as(alice, ["mv", str(out / PREDICTIONS), str(out / "renamed.txt")])
    assert renamed.returncode == 0, renamed.stderr
    edited = users.run_as(alice, ["sh", "-c", f"echo mine >> {out / 'renamed.txt'}"])
    assert edited.returncode == 0, edited.stderr
    removed = users.run_as(alice, ["rm", "-r", str(out)])
    assert removed.returncode == 0, removed.stderr
    assert not out.exists()


def test_a_small_job_is_not_stuck_behind_a_big_one(server: SharedServer, users: UnixUsers) -> None:
    """One worker; alice's job has 30 units (unit_records = 10), bob's one."""
    alice, bob = users.alice, users.bob
    with server.paused_worker():
        big = server.submit_new(alice, "big", 300)
        small = server.submit_new(bob, "small", 5)
    assert server.wait_end(small)["state"] == "done"
    assert server.status(big)["state"] != "done", "bob's small job waited for alice's big one"
    assert server.wait_end(big, timeout=300)["state"] == "done"
