"""What the daemon says about jobs and workers: their states and status maps.

Shared by the control results (``status``, ``list``, ``workers``) and by the events,
whose bodies are these same maps.
"""

from enum import StrEnum, unique
from typing import NotRequired, TypedDict


@unique
class JobState(StrEnum):
    """Where a job is in its life; ``status.state`` and the ``job.*.state`` events."""

    QUEUED = "queued"  # accepted, waiting for planning or a free worker
    RUNNING = "running"  # units are being computed
    ASSEMBLING = "assembling"  # every unit recorded; final files being written
    DONE = "done"  # outputs complete and renamed into place
    FAILED = "failed"  # gave up; ``error`` says why
    KILLED = "killed"  # stopped by ``kill``

    @property
    def is_terminal(self) -> bool:
        """True once the job can never change state again."""
        return self in _TERMINAL_JOB_STATES


_TERMINAL_JOB_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.KILLED})


@unique
class WorkerState(StrEnum):
    """What a worker slot is doing; ``workers[].state`` and ``worker.*.state`` events."""

    VACANT = "vacant"  # a Slurm slot with no pilot: none is needed until units wait
    QUEUED = "queued"  # a Slurm pilot submitted, pending in Slurm's queue
    STARTING = "starting"  # process spawned, waiting for its hello / loading models
    IDLE = "idle"  # ready, no unit assigned
    BUSY = "busy"  # computing a unit (job_id and unit are set)
    STOPPING = "stopping"  # asked to exit (shutdown or cancel), not yet gone
    RESTARTING = "restarting"  # died or hung; waiting out its backoff before a respawn
    FAILED = "failed"  # its worker keeps failing to start; retried, ``error`` says why


class JobStatus(TypedDict):
    """The ``status`` result, one entry of ``list``, and the body of job events."""

    job_id: str
    state: JobState
    records_total: int  # 0 until the input has been planned
    records_done: int  # records computed: recorded in checkpoints, plus those since
    frames_done: int  # kept frames (rows of prediction_results.txt) so far
    # Of the recorded frames, those whose rows a worker reused from an identical frame
    # of the same job instead of computing them (duplicate reads).
    frames_reused: NotRequired[int]
    restarts: int  # times a unit of this job was re-run after a worker failure
    records_recomputed: NotRequired[int]  # records computed again (lost or corrupt parts)
    precision: NotRequired[str]  # fp32 (VirNucPro's numbers), tf32 or bf16
    # The daemon's model set the job uses (`submit`'s `models`, or "default" for a
    # submit that named no model); absent when the submit named the models itself.
    model_set: NotRequired[str]
    error: NotRequired[str]  # why the job failed; present only when state is failed
    # With `error`, when the failure is the user's to fix: `invalid_input` (the input
    # is invalid or changed since submission) or `conflict` (a file not ours in --out).
    error_code: NotRequired[str]
    # Present while the job is paused on a full disk (it keeps its verified parts and
    # tries again by itself), e.g. "no space on /out: 1.2 MB free, about 3.4 MB needed".
    waiting: NotRequired[str]
    # A queued job's place in the queue, 1 = the next to start: an estimate by the fair
    # rule between owners (the owner with the fewest units running goes first).
    queue_position: NotRequired[int]
    input: NotRequired[str]  # the (first) input file
    inputs: NotRequired[list[str]]  # every input file, in order
    output: NotRequired[str]
    submitted_at: NotRequired[float]  # Unix time in seconds
    finished_at: NotRequired[float]  # when it became done, failed or killed (Unix time)


class WorkerInfo(TypedDict):
    """One entry of the ``workers`` result and the body of worker events."""

    id: str
    pid: int | None  # nil while no process exists (restarting, failed)
    device: str  # "cpu", "cuda:0", ...
    state: WorkerState
    job_id: NotRequired[str]  # set while busy
    unit: NotRequired[int]  # unit index within job_id, set while busy
    model_loads: NotRequired[int]  # model sets loaded by this slot's workers so far
    error: NotRequired[str]  # state failed: why its worker could not start (retried)
    backend: NotRequired[str]  # "local" (a subprocess of virnucd) or "slurm" (a pilot)
    slurm_job_id: NotRequired[str]  # a pilot's ARRAYID_TASK, once submitted
    node: NotRequired[str]  # the node a pilot runs on, once running
