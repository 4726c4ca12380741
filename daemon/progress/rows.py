"""The progress log's vocabulary: its errors, the rows it takes and gives, and how a
row is checked and read from SQL.

Shared by the queries (`queries`, `job_queries`: the SQLite threads) and the asyncio
facade (`log`); everyone else imports them from `virnuc.daemon.progress.log`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import Any, Literal

from virnuc.pipeline import gzip_index
from virnuc.pipeline.gzip_index import GzipIndex
from virnuc.pipeline.spec import ModelSpec
from virnuc.protocol import Checkpoint, JobState

UnitState = Literal["pending", "running", "done"]
TERMINAL_STATES: frozenset[str] = frozenset({"done", "failed", "killed"})
UNFINISHED_STATES: tuple[str, ...] = ("queued", "running", "assembling")


# --- errors ------------------------------------------------------------------------


class ProgressLogError(Exception):
    """Base of every progress-log error; raised as itself when the log is closed, when
    SQLite fails (disk full, I/O error, not a database), or when stored rows break an
    invariant (parts of a unit that do not tile it)."""


class SchemaVersionError(ProgressLogError):
    """Raised by `ProgressLog.open` for a database written by a newer virnuc: its
    `user_version` is above what this code knows, so reading it could misinterpret it."""


class NotFoundError(ProgressLogError):
    """Raised by methods that change a job or unit that does not exist."""


class ConflictError(ProgressLogError):
    """Raised when a write contradicts what is stored: a job id already taken, a job
    leaving a terminal state, a unit planned differently than before, planning a job
    whose planning has finished, or a plan that does not tile the records."""


class PartRejected(ProgressLogError):
    """Raised by `record_part` for a checkpoint ack that must not be recorded.

    `reason` is one of: ``invalid`` (bad counts or hash), ``unknown_unit``,
    ``job_finished`` (job is done, failed or killed), ``gap`` / ``overlap`` (the part
    does not start at the unit's resume offset), ``past_end`` (runs past the unit), or
    ``conflict`` (a different part is already recorded at that place). Whatever the
    reason, the unit's resume offset in the log is the truth to continue from."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"part rejected ({reason}): {message}")
        self.reason = reason


# --- rows --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewJob:
    """A submitted job, before it has a queue position. `inputs` are its input files
    in order (default: `input` alone); `input` is always the first of them."""

    job_id: str
    input: str
    output: str
    spec: ModelSpec
    checkpoint_every: int
    save_embeddings: bool = False
    force: bool = False
    inputs: tuple[str, ...] = ()
    owner: str | None = None  # Caller.owner of the submitter (None: admins only)
    output_identity: str | None = None  # "DEV:INODE" of the output dir opened at submit
    input_fingerprint: str | None = None  # of the input files opened at submit
    model_set: str | None = None  # the config's model set it uses (None: named its own)

    def __post_init__(self) -> None:
        _default_inputs(self)


def _default_inputs(job: NewJob | JobRow) -> None:
    """A job built with `input` alone (one file: older rows, older callers) has it as
    its only input; a job with several has the first as `input`."""
    if not job.inputs:
        object.__setattr__(job, "inputs", (job.input,))
    elif job.inputs[0] != job.input:
        raise ValueError(f"input {job.input!r} is not the first of inputs {job.inputs!r}")


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as stored. `records_total`/`units_total` are None until planning ends."""

    job_id: str
    seq: int
    state: JobState
    input: str
    output: str
    spec: ModelSpec  # stored as JSON of its fields
    save_embeddings: bool
    checkpoint_every: int
    force: bool
    records_total: int | None
    units_total: int | None
    records_done: int
    frames_done: int
    restarts: int
    records_recomputed: int
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    input_fingerprint: str | None = None  # recorded when planning starts
    error_code: str | None = None  # a failure that is the user's to fix: invalid_input...
    inputs: tuple[str, ...] = ()  # every input file in order; stored as JSON (v6)
    owner: str | None = None  # who submitted it (v7); None for older jobs: admins only
    output_identity: str | None = None  # "DEV:INODE" of its output dir (v7)
    # each input's seek-point index (v8); None for a plain input, () before planning ends
    gzip_indexes: tuple[GzipIndex | None, ...] = ()
    model_set: str | None = None  # the config's model set it uses (v9); None: its own
    frames_reused: int = 0  # of frames_done, those a worker reused, not computed (v10)

    def __post_init__(self) -> None:
        _default_inputs(self)


@dataclass(frozen=True, slots=True)
class UnitPlan:
    """One planned work unit: `record_count` records from record `first_record`, the
    first of which starts at byte `start_offset` of the (decompressed) input. Its bytes
    end at `end_offset` (the next unit's start, or the end of the data); `digest` is
    theirs (virnuc.input_digest). Both are None for a unit planned by an older virnuc.
    `input_index` is the job's input file the unit reads (a unit never spans two), and
    its offsets are positions in that file."""

    unit_id: int
    start_offset: int
    first_record: int
    record_count: int
    end_offset: int | None = None
    digest: str | None = None
    input_index: int = 0


@dataclass(frozen=True, slots=True)
class UnitRow:
    """A unit as stored; `failures` counts consecutive worker deaths on it. `end_offset`
    and `digest` are as in `UnitPlan` (None: planned before they were recorded), and so
    is `input_index`."""

    job_id: str
    unit_id: int
    start_offset: int
    first_record: int
    record_count: int
    state: UnitState
    failures: int
    end_offset: int | None = None
    digest: str | None = None
    input_index: int = 0

    @property
    def end_record(self) -> int:
        """One past the unit's last record index."""
        return self.first_record + self.record_count


@dataclass(frozen=True, slots=True)
class PartRecord:
    """A worker's checkpoint ack: the part file for records
    [first_record, first_record + record_count) of a unit. `sha256` is lowercase hex;
    `end_offset` is the input byte offset just past the part's last record;
    `frames_reused` counts its frames whose rows came from an identical frame."""

    job_id: str
    unit_id: int
    first_record: int
    record_count: int
    frames: int
    path: str
    size: int
    sha256: str
    end_offset: int
    frames_reused: int = 0

    @classmethod
    def from_ack(cls, ack: Checkpoint) -> PartRecord:
        """The row of an acknowledged part (recorded once the daemon verified it)."""
        return cls(
            ack.job_id,
            ack.unit_id,
            ack.first_record,
            ack.record_count,
            ack.frames,
            ack.path,
            ack.size,
            ack.sha256,
            ack.end_offset,
            ack.frames_reused,
        )


@dataclass(frozen=True, slots=True)
class PartRow(PartRecord):
    """A recorded part: its `PartRecord` fields, then when it was recorded."""

    recorded_at: float = 0.0  # always read from its row (a default: frames_reused has one)


@dataclass(frozen=True, slots=True)
class PartOutcome:
    """What `record_part` did: `recorded` is False for a retried ack of a part that is
    already recorded (a no-op); `unit_done` says whether the unit is now complete;
    `job` is the job's row as committed with it (its counters included)."""

    recorded: bool
    unit_done: bool
    job: JobRow


# --- to and from SQL ---------------------------------------------------------------

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def columns(row_type: type) -> str:
    """The SELECT list matching a row dataclass's field order."""
    return ", ".join(f.name for f in fields(row_type))


def job_row(row: tuple[Any, ...]) -> JobRow:
    """A `jobs` row as selected by `columns(JobRow)`; its spec is stored as JSON."""
    values = dict(zip((f.name for f in fields(JobRow)), row, strict=True))
    values["spec"] = ModelSpec(**json.loads(values["spec"]))
    values["state"] = JobState(values["state"])
    for flag in ("save_embeddings", "force"):
        values[flag] = bool(values[flag])
    values["inputs"] = tuple(json.loads(values["inputs"])) if values["inputs"] else ()
    values["gzip_indexes"] = gzip_index.loads(values["gzip_indexes"])
    return JobRow(**values)


def check_part_fields(part: PartRecord) -> None:
    """Reject nonsense before it reaches a CHECK constraint, with a readable reason."""
    problems = [
        text
        for bad, text in (
            (part.first_record < 0, "negative first_record"),
            (part.record_count < 1, "record_count < 1"),
            (part.frames < 0, "negative frames"),
            (not 0 <= part.frames_reused <= part.frames, "frames_reused not within frames"),
            (part.size < 0, "negative size"),
            (not _SHA256_HEX.fullmatch(part.sha256), "sha256 is not 64 lowercase hex digits"),
        )
        if bad
    ]
    if problems:
        raise PartRejected("invalid", f"{part}: {', '.join(problems)}")
