"""The progress log's queries on the `jobs` and `events` tables.

Every method runs on the thread that owns the connection (the `ProgressLog` facade
queues it there); a write method is exactly one transaction (`connection.transaction`).
A write that changes a job row returns the row as SQLite then holds it, so its caller
(the scheduler's `JobBook`, the row's only writer) never mirrors the arithmetic.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from virnuc.protocol import JobState

from .connection import transaction as _transaction
from .rows import (
    TERMINAL_STATES,
    UNFINISHED_STATES,
    ConflictError,
    JobRow,
    NewJob,
    NotFoundError,
    columns,
    job_row,
)

DEFAULT_MAX_EVENTS = 100_000

_JOB_COLS = columns(JobRow)


class JobQueries:
    """Jobs and the audit trail, on one connection used by one thread."""

    def __init__(self, conn: sqlite3.Connection, max_events: int) -> None:
        self.conn = conn
        self.max_events = max_events
        self.prune_every = max(1, max_events // 10)

    def close(self) -> None:
        self.conn.close()

    def settings(self) -> dict[str, int | str]:
        names = ("journal_mode", "synchronous", "foreign_keys", "user_version")
        return {name: self.conn.execute(f"PRAGMA {name}").fetchone()[0] for name in names}

    # jobs

    @_transaction
    def create_job(self, job: NewJob) -> JobRow:
        if self.get_job(job.job_id) is not None:
            raise ConflictError(f"job id {job.job_id!r} is already taken")
        now = time.time()
        self.conn.execute(
            "INSERT INTO jobs (job_id, seq, state, input, inputs, output, spec,"
            " save_embeddings, checkpoint_every, force, created_at, updated_at,"
            " owner, output_identity, input_fingerprint, model_set)"
            " VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), 'queued',"
            " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.job_id,
                job.input,
                json.dumps(list(job.inputs)),
                job.output,
                json.dumps(job.spec.as_dict(), sort_keys=True),
                int(job.save_embeddings),
                job.checkpoint_every,
                int(job.force),
                now,
                now,
                job.owner,
                job.output_identity,
                job.input_fingerprint,
                job.model_set,
            ),
        )
        more = f" (+{len(job.inputs) - 1} more)" if len(job.inputs) > 1 else ""
        self._event("job.submitted", f"{job.input}{more} -> {job.output}", job.job_id, None)
        return self._job(job.job_id)

    def get_job(self, job_id: str) -> JobRow | None:
        row = self.conn.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE job_id = ?", (job_id,))
        found = row.fetchone()
        return None if found is None else job_row(found)

    def _job(self, job_id: str) -> JobRow:
        job = self.get_job(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}")
        return job

    def list_jobs(self, offset: int, limit: int, owner: str | None = None) -> list[JobRow]:
        args: tuple[str, ...] = ()
        if owner is None:
            query = f"SELECT {_JOB_COLS} FROM jobs ORDER BY seq LIMIT ? OFFSET ?"
        else:  # served by the index jobs_by_owner (owner, seq)
            query = f"SELECT {_JOB_COLS} FROM jobs WHERE owner = ? ORDER BY seq LIMIT ? OFFSET ?"
            args = (owner,)
        return [job_row(r) for r in self.conn.execute(query, (*args, limit, offset))]

    def unfinished_jobs(self) -> list[JobRow]:
        marks = ", ".join("?" * len(UNFINISHED_STATES))
        rows = self.conn.execute(
            f"SELECT {_JOB_COLS} FROM jobs WHERE state IN ({marks}) ORDER BY seq",
            UNFINISHED_STATES,
        )
        return [job_row(r) for r in rows]

    def count_jobs(self, owner: str | None = None) -> int:
        if owner is None:
            return int(self.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
        query = "SELECT COUNT(*) FROM jobs WHERE owner = ?"
        return int(self.conn.execute(query, (owner,)).fetchone()[0])

    @_transaction
    def set_job_state(
        self, job_id: str, state: JobState, error: str | None, error_code: str | None
    ) -> JobRow:
        old = self._job(job_id)
        if old.state in TERMINAL_STATES and state != old.state:
            raise ConflictError(f"job {job_id} is {old.state}; it cannot become {state}")
        now = time.time()
        finished = now if state in TERMINAL_STATES else None
        self.conn.execute(
            "UPDATE jobs SET state = ?, error = ?, error_code = ?, updated_at = ?,"
            " finished_at = COALESCE(finished_at, ?) WHERE job_id = ?",
            (state, error, error_code, now, finished, job_id),
        )
        message = f"{old.state} -> {state}" + (f": {error}" if error else "")
        self._event("job.state", message, job_id, None)
        return self._job(job_id)

    @_transaction
    def drop_finished_jobs(self, finished_before: float) -> list[str]:
        """Delete the jobs that ended before `finished_before` (a Unix time), with their
        units and parts (foreign keys cascade) and events; the ids dropped."""
        marks = ", ".join("?" * len(TERMINAL_STATES))
        rows = self.conn.execute(
            f"SELECT job_id FROM jobs WHERE state IN ({marks}) AND finished_at < ?",
            (*TERMINAL_STATES, finished_before),
        )
        dropped = [job_id for (job_id,) in rows]
        for job_id in dropped:
            self.conn.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            self.conn.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
        return dropped

    @_transaction
    def add_restart(self, job_id: str, lost_records: int) -> JobRow:
        self._bump_job(
            job_id,
            "restarts = restarts + 1, records_recomputed = records_recomputed + ?",
            (lost_records,),
        )
        return self._job(job_id)

    @_transaction
    def fingerprint_input(self, job_id: str, fingerprint: str) -> JobRow:
        self._bump_job(job_id, "input_fingerprint = COALESCE(input_fingerprint, ?)", (fingerprint,))
        return self._job(job_id)

    def _bump_job(self, job_id: str, assignments: str, params: tuple[Any, ...] = ()) -> None:
        cursor = self.conn.execute(
            f"UPDATE jobs SET {assignments}, updated_at = ? WHERE job_id = ?",
            (*params, time.time(), job_id),
        )
        if cursor.rowcount != 1:
            raise NotFoundError(f"no job {job_id!r}")

    # events

    @_transaction
    def log_event(self, kind: str, message: str, job_id: str | None, worker_id: str | None) -> None:
        self._event(kind, message, job_id, worker_id)

    def _event(self, kind: str, message: str, job_id: str | None, worker_id: str | None) -> None:
        """Append an event; every `prune_every` ids, drop all but the newest `max_events`."""
        cursor = self.conn.execute(
            "INSERT INTO events (ts, job_id, worker_id, kind, message) VALUES (?, ?, ?, ?, ?)",
            (time.time(), job_id, worker_id, kind, message),
        )
        new_id = cursor.lastrowid or 0
        if new_id % self.prune_every == 0:
            self.conn.execute("DELETE FROM events WHERE id <= ?", (new_id - self.max_events,))
