"""``virnucctl predict``'s own virnucd: started in a fresh state dir, always cleaned up.

One code path for predictions: ``predict`` runs the same daemon, workers, checkpoints
and assembly as a long-running virnucd, just privately. The daemon gets its own
session (process group), so Ctrl-C reaches virnucctl only, and virnucctl shuts the
daemon down in order: the ``shutdown`` op, a grace period, then SIGKILL to the whole
group (the daemon and its workers). The temporary state dir is removed whatever
happens; the daemon's log, kept in it, is shown first when something went wrong.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

from virnuc.model_sets import ModelSetError, model_sets_toml, parse_model_sets
from virnuc.protocol import PingArgs, ShutdownArgs
from virnuc.protocol.constants import CONTROL_SOCKET

from .connection import DaemonAddress, DaemonClient
from .errors import (
    EXIT_INVALID_INPUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ClientError,
    DaemonUnreachable,
)

#: How long the daemon may take to answer its first ping (imports, SQLite, sockets).
STARTUP_DEADLINE = 120.0
#: How long a ping may go unanswered while the daemon starts, before asking again.
PING_TIMEOUT = 1.0
#: After ``shutdown``, how long the daemon may take to stop its workers and exit.
#: Short on purpose: the job has ended (or is abandoned) and the whole state dir is
#: about to be deleted, so a SIGKILL loses nothing; it only saves the user a wait.
SHUTDOWN_GRACE = 10.0
LOG_NAME = "virnucd.log"
CONFIG_NAME = "virnucd.toml"  # the model sets of `predict --config`, and nothing else
LOG_TAIL_LINES = 40
#: Unix socket paths are limited to about 107 bytes.
_MAX_SOCKET_PATH = 100


def daemon_command(
    state_dir: Path,
    device: str,
    workers: int,
    checkpoint_every: int | None,
    config: Path | None = None,
) -> list[str]:
    """The private virnucd's command line (the current interpreter, so the same venv)."""
    command = [sys.executable, "-m", "virnuc.daemon.main", "--state-dir", str(state_dir)]
    command += ["--device", device, "--workers", str(workers)]
    if checkpoint_every is not None:
        command += ["--checkpoint-every", str(checkpoint_every)]
    if config is not None:
        command += ["--config", str(config)]
    return command


def read_model_sets(path: str) -> str:
    """The `[models.NAME]` tables of the virnucd config at `path`, checked, as the TOML
    of the private virnucd's own config. Only they are taken: the file's other keys
    (a state dir, endpoints, a Slurm backend) belong to the daemon it was written for."""
    try:
        tables = tomllib.loads(Path(path).expanduser().read_text()).get("models", {})
        return model_sets_toml(parse_model_sets(tables))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ClientError(f"cannot read --config {path}: {exc}", EXIT_USAGE) from None
    except ModelSetError as exc:
        raise ClientError(f"--config {path}: {exc}", EXIT_USAGE) from None


def make_state_dir() -> Path:
    """A fresh private dir, short enough for the ``ipc://`` socket paths inside it."""
    path = Path(tempfile.mkdtemp(prefix="virnucctl-"))
    if len(str(path / CONTROL_SOCKET)) > _MAX_SOCKET_PATH:  # a very long $TMPDIR
        path.rmdir()
        path = Path(tempfile.mkdtemp(prefix="virnucctl-", dir="/tmp"))
    return path


class PrivateDaemon:
    """``with PrivateDaemon(...) as client:`` a virnucd that answers, gone afterwards."""

    def __init__(
        self,
        device: str,
        workers: int,
        checkpoint_every: int | None,
        timeout: float,
        model_sets: str = "",
    ) -> None:
        self.device = device
        self.workers = workers
        self.checkpoint_every = checkpoint_every
        self.timeout = timeout
        self.model_sets = model_sets  # TOML of `[models.NAME]` tables (read_model_sets)
        self.state_dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.client: DaemonClient | None = None
        self._log_shown = False

    def __enter__(self) -> DaemonClient:
        try:
            return self._start()
        except BaseException as exc:
            self._cleanup(exc)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cleanup(exc)

    @property
    def log_path(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / LOG_NAME

    def _start(self) -> DaemonClient:
        self.state_dir = make_state_dir()
        config = None
        if self.model_sets:
            config = self.state_dir / CONFIG_NAME
            config.write_text(self.model_sets)
        command = daemon_command(
            self.state_dir, self.device, self.workers, self.checkpoint_every, config
        )
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        address = DaemonAddress.for_state_dir(self.state_dir, "virnucctl predict")
        self.client = DaemonClient(address.control, address.events, self.timeout)
        self._wait_until_ready(self.client, self.process)
        return self.client

    def _wait_until_ready(self, client: DaemonClient, process: subprocess.Popen[bytes]) -> None:
        """Ping until the daemon answers; fail at once if it exits first."""
        deadline = time.monotonic() + STARTUP_DEADLINE
        while True:
            if process.poll() is not None:
                self._log_shown = True
                raise ClientError(
                    f"virnucd exited with status {process.returncode} before answering; "
                    f"the end of its log:\n{self.log_tail()}"
                )
            try:
                client.call(PingArgs(), timeout=min(PING_TIMEOUT, self.timeout))
                return
            except DaemonUnreachable:
                if time.monotonic() > deadline:
                    raise ClientError(
                        f"the private virnucd did not answer within {STARTUP_DEADLINE:g} s",
                        EXIT_UNREACHABLE,
                    ) from None
            with suppress(subprocess.TimeoutExpired):  # a pause that ends if the daemon exits
                process.wait(timeout=0.1)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"    (cannot read {self.log_path}: {e})"
        tail = text.splitlines()[-lines:] or ["(empty)"]
        return "\n".join(f"    {line}" for line in tail)

    def _cleanup(self, exc: BaseException | None) -> None:
        """Stop the daemon, show its log if the failure may be its, remove the dir."""
        try:
            if isinstance(exc, KeyboardInterrupt) and self._running():
                print(
                    "virnucctl: interrupted; stopping the private virnucd "
                    "(interrupt again to kill it)",
                    file=sys.stderr,
                )
            self._stop()
            if isinstance(exc, DaemonUnreachable):
                exc.advice = "the private virnucd stopped answering (the end of its log is above)"
            if self._should_show_log(exc):
                print(f"virnucctl: the end of virnucd's log:\n{self.log_tail()}", file=sys.stderr)
        finally:
            if self.client is not None:
                self.client.close()
            if self.state_dir is not None:
                shutil.rmtree(self.state_dir, ignore_errors=True)

    def _should_show_log(self, exc: BaseException | None) -> bool:
        """Not for success, Ctrl-C or the user's own mistakes (the message says it all)."""
        if exc is None or self._log_shown or isinstance(exc, KeyboardInterrupt):
            return False
        if self.state_dir is None:  # never got as far as starting it
            return False
        return not (isinstance(exc, ClientError) and exc.exit_code == EXIT_INVALID_INPUT)

    def _running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _stop(self) -> None:
        """``shutdown``, wait out the grace period, then SIGKILL the daemon's group."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            if self.client is not None:
                # Already stopping, or hung: either way the grace period decides.
                with suppress(ClientError):
                    self.client.call(ShutdownArgs(), timeout=min(5.0, self.timeout))
            process.wait(timeout=SHUTDOWN_GRACE)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            _kill_group(process)  # a second Ctrl-C means: now


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the daemon and every worker it started (they share its process group).

    Only called while the daemon, the group's leader, is still unreaped, so the group
    id cannot have been reused by anyone else.
    """
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, so the cleanup above still runs."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
