"""A real virnucd on a shared server, as systemd/virnucd.service sets one up, and its users.

`SharedServer` runs virnucd as its own Unix user (`users.daemon`) with a config like
systemd/virnucd.toml: a state dir owned by that user, `group` (alice and bob are
members, eve is not), `admin_group` (carol, an admin this module adds), input and
output roots on a shared area (`srv`, like /srv/virnuc) and `model_roots` on a models
dir only root can write, holding the tiny demo models. Each member has a dir of hers
in `srv`, shared with virnucd alone (its group is virnucd's own user group), so that
virnucd could read and write there but the other members cannot: what a deputy
confused by a request of alice's would reach.

The clients are real: `call_as` runs a plain pyzmq + msgpack request as a user (every
reply, error code included), `ctl_as` runs `virnucctl`. The test process itself is
root, which virnucd counts as an admin: it watches jobs and workers through `client`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.synthetic import random_lengths, write_fasta
from tests.support.harness import RawClient, json_log_events
from tests.support.poll import wait_for
from tests.support.unix_users import UnixUsers, User
from tests.support.user_scripts import CALL_SCRIPT

ENDED = ("done", "failed", "killed")
WORKER_TIMEOUT = 120.0  # a CPU worker imports torch on two busy cores


@dataclass
class SharedServer:
    users: UnixUsers
    admin: User  # "carol" in the tests: a member of `group` and of `admin_group`
    root: Path  # everything of this server: state dir, models, srv
    log_path: Path  # virnucd's output, in root's own dir (no member reads it)
    unit_records: int = 10
    process: subprocess.Popen[bytes] | None = None
    client: RawClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = RawClient(self.control)

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def srv(self) -> Path:
        return self.root / "srv"

    @property
    def control(self) -> str:
        return f"ipc://{self.state_dir}/control.sock"

    @property
    def events(self) -> str:
        return f"ipc://{self.state_dir}/events.sock"

    # --- setting up ---------------------------------------------------------------------

    def prepare(self, demo_cache: Path) -> None:
        """The dirs an admin would make before the first start."""
        daemon = self.users.daemon
        self.root.mkdir(mode=0o711)
        self.state_dir.mkdir(mode=0o700)  # systemd's StateDirectory=, owned by the user
        os.chown(self.state_dir, daemon.uid, daemon.gid)
        shutil.copytree(demo_cache, self.models)  # root's: only admins write model_roots
        for path in [self.models, *self.models.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # as installed: all may read
        self.srv.mkdir(mode=0o755)
        for user in (self.users.alice, self.users.bob, self.admin):
            # rwx for its owner and virnucd's group (setgid: dirs made inside keep it),
            # r-x for the other members: they may look, not write.
            self.give(self.area(user), user, 0o2775)
        self.config_path.write_text(self.config_text())

    @property
    def config_path(self) -> Path:
        return self.root / "virnucd.toml"

    def config_text(self) -> str:
        values: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "group": self.users.group,
            "admin_group": self.users.admins,
            "device": "cpu",
            "workers": 1,
            "warm_standby": False,  # two shared cores: no spare process
            "unit_records": self.unit_records,
            "checkpoint_every": self.unit_records,
            "heartbeat_timeout": 120.0,  # a test pauses the worker (SIGSTOP) briefly
            "input_roots": [str(self.srv)],
            "output_roots": [str(self.srv)],
            "model_roots": [str(self.models)],
            "log_format": "json",
        }
        return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())

    def area(self, user: User) -> Path:
        """The user's dir in srv; virnucd's group may write it, other members may not."""
        return self.srv / user.name

    def give(self, path: Path, user: User, mode: int) -> Path:
        """Make `path` (created if missing, a dir) the user's, group virnucd's own."""
        if not path.exists():
            path.mkdir()
        os.chown(path, user.uid, self.users.daemon.gid)
        path.chmod(mode)
        return path

    def write_input(self, user: User, name: str, records: int, seed: int = 1) -> Path:
        """A FASTA of `records` short contigs in the user's area, 0640 (virnucd may read)."""
        path = self.area(user) / name
        write_fasta(path, random_lengths(records, seed=seed, low=200, high=400), seed=seed)
        os.chown(path, user.uid, self.users.daemon.gid)
        path.chmod(0o640)
        return path

    # --- running ------------------------------------------------------------------------

    def start(self) -> SharedServer:
        env = {
            **os.environ,
            "HOME": str(self.users.home(self.users.daemon)),
            "VIRNUC_CACHE_DIR": str(self.models),
            "HF_HUB_OFFLINE": "1",
        }
        env.pop("VIRNUC_STATE_DIR", None)
        command = [sys.executable, "-m", "virnuc.daemon.main", "--config", str(self.config_path)]
        with self.log_path.open("ab") as log:
            self.process = self.users.popen_as(
                self.users.daemon, command, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        wait_for(self._answers, 60, "virnucd (as its own user) to answer ping")
        return self

    def _answers(self) -> bool:
        if not self.running():
            raise AssertionError(f"virnucd exited:\n{self.log_tail()}")
        try:
            return bool(self.client.call("ping", timeout=0.5)["ok"])
        except TimeoutError:
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def worker_ready(self) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            workers = self.client.result("workers")["workers"]
            return workers[0] if workers and workers[0]["state"] in ("idle", "busy") else None

        return wait_for(probe, WORKER_TIMEOUT, "the worker to say hello", interval=0.1)

    def stop(self) -> None:
        """SIGTERM (the same shutdown as the op), then SIGKILL if it hangs."""
        if self.process is None:
            return
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.client.close()

    def log_events(self) -> list[dict[str, Any]]:
        return json_log_events(self.log_path)

    def log_mentions(self, op: str, user: User, job_id: str | None = None) -> bool:
        """Whether a log event about `op` (its name has it) names `user` as the
        caller (its name or uid) and, if given, the job."""
        names = (user.name, f"uid:{user.uid}", f"uid {user.uid}")
        for event in self.log_events():
            text = json.dumps(event)
            if op not in str(event.get("event", "")) and event.get("op") != op:
                continue
            if any(name in text for name in names) and (job_id is None or job_id in text):
                return True
        return False

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # --- clients ------------------------------------------------------------------------

    def call_as(self, user: User, op: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
        """The whole reply to `op` sent by `user` ({"timeout": True} if none came)."""
        argv = [sys.executable, "-c", CALL_SCRIPT, self.control, op, json.dumps(args)]
        done = self.users.run_as(user, [*argv, str(timeout)])
        assert done.returncode == 0, f"{op} as {user.name}: {done.stderr[-2000:]}"
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def result_as(self, user: User, op: str, **args: Any) -> dict[str, Any]:
        reply = self.call_as(user, op, **args)
        assert reply.get("ok"), f"{op} as {user.name}: {reply}"
        return reply["result"]  # type: ignore[no-any-return]

    def error_as(self, user: User, op: str, **args: Any) -> dict[str, Any]:
        """The error (code, message) of a request that must be refused."""
        reply = self.call_as(user, op, **args)
        assert reply.get("error"), f"{op} as {user.name} was not refused: {reply}"
        return reply["error"]  # type: ignore[no-any-return]

    def submit_as(self, user: User, inputs: list[Path], out: Path, **extra: Any) -> str:
        args = {"inputs": [str(p) for p in inputs], "output": str(out), "profile": "demo"}
        return str(self.result_as(user, "submit", **args, **extra)["job_id"])

    def submit_new(self, user: User, name: str, records: int) -> str:
        """`user` submits a new input NAME.fa of `records` contigs into her area/NAME."""
        inputs = [self.write_input(user, f"{name}.fa", records)]
        return self.submit_as(user, inputs, self.area(user) / name)

    def ctl_as(self, user: User, *argv: str) -> subprocess.CompletedProcess[str]:
        """`virnucctl --state-dir STATE ARGV...` as `user`."""
        command = [sys.executable, "-m", "virnuc.client.cli", "--state-dir", str(self.state_dir)]
        return self.users.run_as(user, [*command, *argv])

    def python_as(self, user: User, code: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """Python `code` run as `user`, with `argv` as its sys.argv[1:]."""
        return self.users.run_as(user, [sys.executable, "-c", code, *argv])

    def popen_python_as(self, user: User, code: str, *argv: str) -> subprocess.Popen[str]:
        return self.users.popen_as(
            user,
            [sys.executable, "-c", code, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # --- watching (as root, an admin) -------------------------------------------------

    def status(self, job_id: str) -> dict[str, Any]:
        return self.client.result("status", job_id=job_id)

    def wait_end(self, job_id: str, timeout: float = 180) -> dict[str, Any]:
        return self.client.wait_state(job_id, ENDED, timeout)

    def wait_busy_with(self, job_id: str, unit: int = 0) -> dict[str, Any]:
        """The worker, once it computes unit `unit` or a later one of `job_id`."""

        def probe() -> dict[str, Any] | None:
            workers = self.client.result("workers")["workers"]
            busy = (w for w in workers if w.get("job_id") == job_id and w["unit"] >= unit)
            return next(busy, None)

        what = f"the worker to take unit {unit} of job {job_id}"
        return wait_for(probe, 120, what, interval=0.02)

    @contextlib.contextmanager
    def paused_worker(self) -> Iterator[int]:
        """The worker stopped (SIGSTOP: a real stall, far shorter than
        heartbeat_timeout) while the body runs; it continues afterwards."""
        pid = int(self.worker_ready()["pid"])
        os.kill(pid, signal.SIGSTOP)
        try:
            yield pid
        finally:
            os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def extra_user(name: str, groups: list[str]) -> Iterator[User]:
    """One more throwaway user (an admin), removed afterwards."""
    import pwd

    subprocess.run(["userdel", name], capture_output=True)  # a leftover of a killed run
    argv = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"]
    subprocess.run([*argv, "--groups", ",".join(groups), name], check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    try:
        yield User(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)


@contextlib.contextmanager
def shared_server(
    users: UnixUsers, demo_cache: Path, log_dir: Path, name: str, unit_records: int = 10
) -> Iterator[SharedServer]:
    """A started virnucd as users.daemon, its worker up; stopped and removed afterwards."""
    admin_name = users.daemon.name.replace("daemon", f"{name[:6]}adm")
    with extra_user(admin_name, [users.group, users.admins]) as admin:
        server = SharedServer(
            users, admin, users.base / name, log_dir / f"{name}.log", unit_records
        )
        try:
            server.prepare(demo_cache)
            yield server.start()
        finally:
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)


class JsonLines:
    """The JSON lines a child prints, read by a thread so that a test waits for them
    with a deadline (wait_for) instead of a read that could block for ever. Leaving
    the `with` closes the child's stdin (its cue to exit) and reaps it."""

    def __init__(self, process: subprocess.Popen[str]):
        assert process.stdout is not None
        self.process = process
        self.lines: list[Any] = []
        self._reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)

    def __enter__(self) -> JsonLines:
        self._reader.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))
