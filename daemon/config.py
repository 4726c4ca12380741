"""virnucd's settings: defaults, a TOML file (`--config`), then command-line overrides.

Every knob lives here with its default and the reason for it, so README's
configuration table and the code cannot drift apart.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from virnuc.cpu_share import usable_cpus
from virnuc.model_sets import ModelSetConfig, ModelSetError, parse_model_sets
from virnuc.pipeline.spec import DEFAULT_PRECISION, PRECISIONS
from virnuc.protocol.constants import (
    CONTROL_SOCKET,
    EVENTS_SOCKET,
    WORKERS_SOCKET,
    default_state_dir,
    needs_curve,
)

DEFAULT_CHECKPOINT_EVERY = 10_000  # records between parts: bounds the work lost to a kill
DEFAULT_CHECKPOINT_SECONDS = 300.0  # ... and so does time, for slow records
DEFAULT_UNIT_RECORDS = 10_000  # the most records one work unit holds


class ConfigError(ValueError):
    """Raised for a configuration file or option that cannot be used."""


def _default_state_dir() -> Path:
    return default_state_dir(os.environ)[0]


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path = field(default_factory=_default_state_dir)
    device: str = "cpu"  # cpu | cuda | cuda:0,cuda:1
    workers: int | None = None  # CPU worker count (default 1); for cuda, the GPU count
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS
    unit_records: int = DEFAULT_UNIT_RECORDS
    # A job's precision unless its submit names one: fp32 (VirNucPro's numbers), tf32
    # or bf16 (faster on GPUs; README, section Precision, has the measured differences).
    precision: str = DEFAULT_PRECISION
    half_precision: bool = False  # deprecated: means precision = "bf16"
    block_frames: int = 2048  # frames a worker batches together; larger suits big GPUs
    # Host memory (MiB) a worker keeps the rows of frames it scored in, so an identical
    # frame later in the same job (duplicate reads) is not computed again; 0: no reuse.
    # 256 MiB holds ~1.4 million frames' scores, or ~19,000 frames' with embeddings
    # (--save-embeddings: 13 KB a frame): a whole 10,000-read unit and more either way.
    frame_cache_mb: int = 256
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 30.0  # silence after which a worker counts as hung
    hello_timeout: float = 120.0  # a worker's start-up (imports) before it must say hello
    stop_grace: float = 30.0  # SIGTERM/shutdown -> SIGKILL
    restart_backoff_max: float = 30.0
    # A worker that lived this long before it died is respawned at once and its slot's
    # backoff starts over; one that dies younger waits 0.25 s, 0.5 s, ... (tests lower it).
    healthy_run: float = 60.0
    worker_nice: int = 5  # workers yield the CPU to virnucd, so `status` stays fast
    warm_standby: bool = True  # keep an imported spare process per slot for fast restarts
    standby_delay: float = 10.0  # a worker's age before its spare is spawned (CPU share)
    max_unit_failures: int = 3  # consecutive worker deaths on one unit before the job fails
    # Unfinished jobs (queued, running, assembling) one owner may have at once; a submit
    # over it is refused (conflict) until one finishes. 0: no limit. Admins count too.
    max_jobs_per_owner: int = 0
    # Finished jobs (done, failed, killed) leave the progress log, with their units,
    # parts and events, this many days after they ended: checked at start-up and once
    # a day (daemon/retention.py). 0 keeps them for ever.
    retention_days: float = 30.0
    # A full disk pauses a job (verified parts kept) instead of failing it; it looks
    # again after space_retry seconds, doubling up to space_retry_max.
    space_retry: float = 2.0
    space_retry_max: float = 60.0
    # Below this much free space the state disk counts as full: submits answer
    # no_space and units wait, before SQLite or a part write fails half-way.
    state_min_free_mb: int = 64
    max_message_size: int = 4 * 1024 * 1024
    control_endpoint: str | None = None  # default ipc://{state_dir}/control.sock
    events_endpoint: str | None = None  # default ipc://{state_dir}/events.sock
    log_format: str = "auto"  # auto (console on a TTY, else JSON) | json | console
    # Paths in requests must resolve (symlinks followed) under one of these.
    input_roots: tuple[str, ...] = ("/",)
    output_roots: tuple[str, ...] = ("/",)
    # ... and so must the model files and directories a request names (--esm FILE,
    # --dnabert DIR, --classifier FILE). "/" (the default) allows any: set it on a shared
    # daemon. Hub ids, fair-esm names and the demo profile's own models are not paths.
    model_roots: tuple[str, ...] = ("/",)
    # Named model sets, `[models.NAME]` tables (virnuc/model_sets.py): a submit names one
    # (--models NAME) instead of model files, and `[models.default]` serves a submit that
    # names no model. Their paths are the admin's, so model_roots does not limit them.
    models: dict[str, ModelSetConfig] = field(default_factory=dict, hash=False)
    # Members of this group may use the sockets too: state dir 0710, sockets 0660.
    group: str | None = None
    # CURVE (encryption + client keys) on the control and events sockets; required
    # for tcp://, which file permissions cannot protect. See daemon/access.py.
    curve: bool = False
    curve_server_key: Path | None = None  # default {state_dir}/curve/server.key_secret
    curve_allow_dir: Path | None = None  # default {state_dir}/curve/clients
    # Client keys (NAME.key) whose holders are admins; default {state_dir}/curve/admins.
    curve_admin_dir: Path | None = None
    # A CURVE key NAME that stands for a Unix user: its jobs are that user's, with that
    # user's file rights. A key mapped to no user owns its jobs as "key:NAME".
    curve_users: dict[str, str] = field(default_factory=dict, hash=False)
    # Besides root and virnucd's own user, this group's members are admins: they see
    # every job and may stop virnucd.
    admin_group: str | None = None
    # Where workers run: "local" (subprocesses of virnucd, one per `device` entry) or
    # "slurm" (pilots submitted with sbatch on demand; README, section Clusters).
    backend: str = "local"
    # The workers' socket; default ipc://{state_dir}/workers.sock. Pilots on other
    # nodes need a tcp://HOST:PORT they can reach, which is only bound with CURVE.
    worker_endpoint: str | None = None
    # The job parts (default {state_dir}/jobs): with Slurm, a directory on the shared
    # filesystem the nodes write to. SQLite stays in state_dir, on a local disk.
    parts_dir: Path | None = None
    slurm_partition: str | None = None
    slurm_account: str | None = None
    slurm_gres: str = "gpu:1"  # "" submits without --gres (CPU pilots)
    slurm_cpus: int | None = None  # --cpus-per-task
    slurm_mem: str | None = None  # --mem, e.g. "32G"
    slurm_time: str | None = None  # --time, e.g. "24:00:00"
    slurm_max_workers: int = 4  # pilots at most at once (the array's %MAX too)
    slurm_extra_args: tuple[str, ...] = ()  # more sbatch options, e.g. ["--qos=long"]
    # A pilot still pending after this long is cancelled and the jobs waiting for it
    # fail with Slurm's reason (a DOWN partition, a bad account) instead of waiting.
    slurm_start_timeout: float = 600.0
    slurm_poll_interval: float = 1.0  # squeue, for pilots' states
    # Slurm sends SIGTERM this long before a pilot's time limit: its emergency part.
    slurm_signal_seconds: int = 120
    idle_exit: float = 60.0  # a pilot with no unit for this long exits (frees its GPU)
    # The pilots' stdout/stderr (default {state_dir}/slurm-logs): on a cluster, a
    # directory the nodes can write (Slurm fails a job whose --output it cannot open).
    slurm_log_dir: Path | None = None

    @property
    def control(self) -> str:
        return self.control_endpoint or f"ipc://{self.state_dir / CONTROL_SOCKET}"

    @property
    def events(self) -> str:
        return self.events_endpoint or f"ipc://{self.state_dir / EVENTS_SOCKET}"

    @property
    def workers_endpoint(self) -> str:
        return self.worker_endpoint or f"ipc://{self.state_dir / WORKERS_SOCKET}"

    @property
    def worker_keys_dir(self) -> Path:
        """The worker socket's CURVE keys, made by virnucd (daemon/slots/keys.py)."""
        return self.state_dir / "worker-curve"

    @property
    def server_key_file(self) -> Path:
        return self.curve_server_key or self.state_dir / "curve" / "server.key_secret"

    @property
    def client_keys_dir(self) -> Path:
        return self.curve_allow_dir or self.state_dir / "curve" / "clients"

    @property
    def admin_keys_dir(self) -> Path:
        return self.curve_admin_dir or self.state_dir / "curve" / "admins"

    @property
    def admin_group_id(self) -> int | None:
        """The gid of `admin_group` (checked to exist when the config is loaded)."""
        return None if self.admin_group is None else grp.getgrnam(self.admin_group).gr_gid

    @property
    def group_id(self) -> int | None:
        """The gid of `group` (checked to exist when the config is loaded)."""
        return None if self.group is None else grp.getgrnam(self.group).gr_gid

    @property
    def database(self) -> Path:
        return self.state_dir / "virnuc.db"

    @property
    def model_cache(self) -> Path:
        """Where the demo models are built: $VIRNUC_CACHE_DIR, else inside the state dir."""
        if os.environ.get("VIRNUC_CACHE_DIR"):
            return Path(os.environ["VIRNUC_CACHE_DIR"])
        return self.state_dir / "models"

    @property
    def default_precision(self) -> str:
        """`precision`, or bf16 where the deprecated `half_precision` is still set."""
        return (
            "bf16"
            if self.half_precision and self.precision == DEFAULT_PRECISION
            else self.precision
        )

    @property
    def state_min_free(self) -> int:
        return self.state_min_free_mb * 1_000_000

    @property
    def jobs_dir(self) -> Path:
        """Where the jobs' parts live (on the state disk unless `parts_dir` says
        otherwise: what `state_min_free` guards)."""
        return self.parts_dir or self.state_dir / "jobs"

    @property
    def pilot_log_dir(self) -> Path:
        return self.slurm_log_dir or self.state_dir / "slurm-logs"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def threads_per_cpu_worker(self) -> int:
        """CPU workers share the cores virnucd is given (affinity, cgroup quota, Slurm's
        count: `cpu_share.usable_cpus`, not the machine's); torch's default, every
        core in each worker, thrashes. `OMP_NUM_THREADS` in virnucd's own environment
        overrides this (the launcher keeps it)."""
        return max(1, usable_cpus() // len(self.devices()))

    def devices(self) -> list[str]:
        """One entry per worker slot, e.g. ['cpu', 'cpu'] or ['cuda:0', 'cuda:1']; a
        Slurm slot's device is `cpu` or `cuda` (the GPU Slurm gave the pilot)."""
        if self.backend == "slurm":
            return ["cpu" if self.device == "cpu" else "cuda"] * self.slurm_max_workers
        if self.device == "cpu":
            return ["cpu"] * (self.workers or 1)
        if self.device == "cuda":
            return [f"cuda:{i}" for i in range(self.workers or 1)]
        devices = [d.strip() for d in self.device.split(",") if d.strip()]
        if not devices or not all(re.fullmatch(r"cuda:\d+", d) for d in devices):
            raise ConfigError(
                f"--device must be cpu, cuda or cuda:N[,cuda:M...], not {self.device!r}"
            )
        if len(set(devices)) != len(devices):
            raise ConfigError(f"--device names a GPU twice: {self.device!r}")
        return devices


def load_config(path: Path | None, overrides: dict[str, Any]) -> DaemonConfig:
    """Defaults <- TOML file (keys as the field names) <- non-None overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values.update(tomllib.loads(path.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(DaemonConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
    if isinstance(values.get("slurm_extra_args"), list):
        values["slurm_extra_args"] = tuple(values["slurm_extra_args"])
    paths = ("state_dir", "curve_server_key", "curve_allow_dir", "curve_admin_dir", "parts_dir",
             "slurm_log_dir")  # fmt: skip
    for name in paths:
        if values.get(name) is not None:
            values[name] = Path(values[name]).expanduser()
    for roots in ("input_roots", "output_roots", "model_roots"):
        if roots in values:
            values[roots] = tuple(str(Path(r).resolve()) for r in values[roots])
    if "models" in values:
        try:
            values["models"] = parse_model_sets(values["models"])
        except ModelSetError as exc:
            raise ConfigError(str(exc)) from exc
    config = replace(DaemonConfig(), **values)
    _check(config)
    return config


def _check(config: DaemonConfig) -> None:
    positive = ("checkpoint_every", "unit_records", "block_frames", "max_unit_failures",
                "max_message_size")  # fmt: skip
    for name in positive:
        if int(getattr(config, name)) < 1:
            raise ConfigError(f"{name} must be at least 1")
    if config.precision not in PRECISIONS:
        raise ConfigError(
            f"precision must be one of {', '.join(PRECISIONS)}, not {config.precision!r}"
        )
    for name in ("state_min_free_mb", "max_jobs_per_owner", "frame_cache_mb"):
        if int(getattr(config, name)) < 0:
            raise ConfigError(f"{name} must be 0 or more")
    if config.retention_days < 0:
        raise ConfigError("retention_days must be 0 (keep finished jobs for ever) or more")
    if config.healthy_run <= 0:
        raise ConfigError("healthy_run must be above 0")
    if not 0 < config.space_retry <= config.space_retry_max:
        raise ConfigError("space_retry must be above 0 and at most space_retry_max")
    if config.workers is not None and config.workers < 1:
        raise ConfigError("--workers must be at least 1")
    config.devices()
    _check_backend(config)
    _check_access(config)


def _check_backend(config: DaemonConfig) -> None:
    if config.backend not in ("local", "slurm"):
        raise ConfigError(f"backend must be local or slurm, not {config.backend!r}")
    if config.backend == "local":
        return
    if config.slurm_max_workers < 1:
        raise ConfigError("slurm_max_workers must be at least 1")
    if config.device not in ("cpu", "cuda"):
        raise ConfigError("with backend = slurm, device is cpu or cuda (Slurm picks the GPU)")
    if min(config.idle_exit, config.slurm_start_timeout, config.slurm_poll_interval) <= 0:
        raise ConfigError("idle_exit, slurm_start_timeout and slurm_poll_interval must be above 0")
    if not config.workers_endpoint.startswith("tcp://"):
        raise ConfigError(
            "backend = slurm needs worker_endpoint = 'tcp://HOST:PORT' on an address the "
            "compute nodes can reach (it is bound with CURVE; README, section Clusters)"
        )


def _check_access(config: DaemonConfig) -> None:
    """Refuse, before anything starts, an endpoint that would let anyone in."""
    for key in ("group", "admin_group"):
        name = getattr(config, key)
        if name is None:
            continue
        try:
            grp.getgrnam(name)
        except KeyError:
            raise ConfigError(
                f"{key} {name!r} does not exist (create it: groupadd {name})"
            ) from None
    _check_curve_users(config.curve_users)
    if config.curve:
        return
    endpoints = {"control_endpoint": config.control, "events_endpoint": config.events}
    for name, endpoint in endpoints.items():
        if needs_curve(endpoint):
            raise ConfigError(_needs_curve(name, endpoint, config.state_dir))


def _check_curve_users(users: object) -> None:
    """`curve_users` maps key names to Unix users that exist now (a typo would leave the
    key's holder with no identity at all, found only at their first connection)."""
    if not isinstance(users, dict):
        raise ConfigError('curve_users must be a table: NAME = "unixuser"')
    for name, user in users.items():
        if not isinstance(user, str) or not name or "/" in name:
            raise ConfigError(f'curve_users: write NAME = "unixuser", not {name!r} = {user!r}')
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise ConfigError(
                f"curve_users maps key {name!r} to {user!r}, who is not a user on this host"
            ) from None


def _needs_curve(name: str, endpoint: str, state_dir: Path) -> str:
    curve = state_dir / "curve"
    return (
        f"{name} = {endpoint!r} can be reached by anyone who can reach this host, so "
        "virnucd listens there only with CURVE (encryption and client keys). Set it up:\n"
        f"  virnucctl keys generate --dir {curve.absolute()} --name server\n"
        f"  virnucctl keys generate        # per client; then copy its client.key into "
        f"{curve.absolute()}/clients/\n"
        "and add `curve = true` to the config (curve_server_key and curve_allow_dir "
        f"default to {curve.absolute()}/server.key_secret and {curve.absolute()}/clients). "
        "See README, section Security."
    )
