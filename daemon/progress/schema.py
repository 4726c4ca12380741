"""The progress log's SQLite schema, as forward migrations.

`MIGRATIONS[i]` takes a database from `PRAGMA user_version` i to i + 1. The progress
log applies the missing ones in order, each in its own transaction together with the
version bump, so a crash mid-migration leaves the old version intact. Never edit a
released migration: append a new one (a database in the field already ran the old).

The CHECK constraints and foreign keys are a backstop; the queries (`queries.py`,
`job_queries.py`) validate first so that callers get a specific error rather than
an IntegrityError.
"""

from __future__ import annotations

JOB_STATES = ("queued", "running", "assembling", "done", "failed", "killed")
UNIT_STATES = ("pending", "running", "done")

_V1 = """
CREATE TABLE jobs (
    job_id             TEXT PRIMARY KEY,
    seq                INTEGER NOT NULL UNIQUE,            -- FIFO order of submission
    state              TEXT NOT NULL CHECK (state IN
                           ('queued', 'running', 'assembling', 'done', 'failed', 'killed')),
    input              TEXT NOT NULL,
    output             TEXT NOT NULL,
    spec               TEXT NOT NULL,                      -- JSON of the model options
    save_embeddings    INTEGER NOT NULL CHECK (save_embeddings IN (0, 1)),
    checkpoint_every   INTEGER NOT NULL CHECK (checkpoint_every > 0),
    force              INTEGER NOT NULL CHECK (force IN (0, 1)),
    records_total      INTEGER CHECK (records_total >= 0), -- NULL until planned
    units_total        INTEGER CHECK (units_total >= 0),   -- NULL until planned
    records_done       INTEGER NOT NULL DEFAULT 0 CHECK (records_done >= 0),
    frames_done        INTEGER NOT NULL DEFAULT 0 CHECK (frames_done >= 0),
    restarts           INTEGER NOT NULL DEFAULT 0,
    records_recomputed INTEGER NOT NULL DEFAULT 0,
    error              TEXT,
    created_at         REAL NOT NULL,
    updated_at         REAL NOT NULL,
    finished_at        REAL
);

CREATE TABLE units (
    job_id       TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    unit_id      INTEGER NOT NULL CHECK (unit_id >= 0),
    start_offset INTEGER NOT NULL CHECK (start_offset >= 0), -- byte offset of first record
    first_record INTEGER NOT NULL CHECK (first_record >= 0),
    record_count INTEGER NOT NULL CHECK (record_count > 0),
    state        TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'running', 'done')),
    failures     INTEGER NOT NULL DEFAULT 0,               -- consecutive worker deaths
    PRIMARY KEY (job_id, unit_id)
) WITHOUT ROWID;

CREATE INDEX units_by_state ON units (job_id, state, unit_id);

CREATE TABLE parts (
    job_id       TEXT NOT NULL,
    unit_id      INTEGER NOT NULL,
    first_record INTEGER NOT NULL,
    record_count INTEGER NOT NULL CHECK (record_count > 0),
    frames       INTEGER NOT NULL CHECK (frames >= 0),
    path         TEXT NOT NULL,
    size         INTEGER NOT NULL CHECK (size >= 0),
    sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
    end_offset   INTEGER NOT NULL CHECK (end_offset >= 0),   -- input byte offset after it
    recorded_at  REAL NOT NULL,
    PRIMARY KEY (job_id, unit_id, first_record),            -- also the input order
    FOREIGN KEY (job_id, unit_id) REFERENCES units (job_id, unit_id) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE workers (
    worker_id  TEXT PRIMARY KEY,
    pid        INTEGER,
    device     TEXT NOT NULL,
    state      TEXT NOT NULL,
    job_id     TEXT,
    unit_id    INTEGER,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL
);

-- AUTOINCREMENT: ids are never reused after pruning, so "newest N" is "id > max - N".
CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts        REAL NOT NULL,
    job_id    TEXT,
    worker_id TEXT,
    kind      TEXT NOT NULL,
    message   TEXT NOT NULL
);

CREATE INDEX events_by_job ON events (job_id, id);
"""

# v2: the `workers` table goes; `virnucctl workers` is served from the supervisors.
_V2 = """
DROP TABLE workers;
"""

# v3: what the input was when planned (see daemon/jobs/input_check.py); NULL for old jobs.
_V3 = """
ALTER TABLE jobs ADD COLUMN input_fingerprint TEXT;
"""

# v4: where each unit's bytes end and their digest (blake2b-128 hex, see
# virnuc/input_digest.py), checked by the worker that reads them; NULL for old units.
_V4 = """
ALTER TABLE units ADD COLUMN end_offset INTEGER CHECK (end_offset > start_offset);
ALTER TABLE units ADD COLUMN digest TEXT CHECK (length(digest) = 32);
"""

# v5: which protocol error code a failure maps to (invalid_input, conflict), so that
# `virnucctl wait` can exit 4 for a job whose input is to blame; NULL otherwise.
_V5 = """
ALTER TABLE jobs ADD COLUMN error_code TEXT;
"""

# v6: several input files per job. `jobs.inputs` lists them all, in order, as a JSON
# array (`input` stays the first, for older readers; NULL for older jobs: `input`
# alone); each unit reads one of them, `units.input_index` (0 for older units).
_V6 = """
ALTER TABLE jobs ADD COLUMN inputs TEXT;
ALTER TABLE units ADD COLUMN input_index INTEGER NOT NULL DEFAULT 0 CHECK (input_index >= 0);
"""

# v7: who submitted each job (`Caller.owner`: "uid:1001", or "key:NAME" for a CURVE
# key mapped to no Unix user; NULL for older jobs, which only admins see), and which
# directory its outputs go to ("DEV:INODE" of the directory opened at submit; NULL for
# older jobs), so that a path swapped for a symlink later is refused, not followed.
_V7 = """
ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN output_identity TEXT;
CREATE INDEX jobs_by_owner ON jobs (owner, seq);
"""

# v8: the seek-point index of each gzip input (pipeline/gzip_index.py), saved by the
# planner in the job's directory: a JSON array, one entry per input in order, each
# {"path", "size", "sha256"} or null for a plain input; NULL for jobs planned before.
_V8 = """
ALTER TABLE jobs ADD COLUMN gzip_indexes TEXT;
"""

# v9: the name of the model set of virnucd's config (`[models.NAME]`) a job uses, shown
# by `status`; NULL for a job whose submit named its models, and for older jobs.
_V9 = """
ALTER TABLE jobs ADD COLUMN model_set TEXT;
"""

# v10: frames whose rows a worker reused from an identical frame of the same job instead
# of computing them (pipeline/frame_cache.py), per part and summed per job like
# `frames`, so a part recomputed after a crash is counted once; 0 for older rows.
_V10 = """
ALTER TABLE parts ADD COLUMN frames_reused INTEGER NOT NULL DEFAULT 0 CHECK (frames_reused >= 0);
ALTER TABLE jobs ADD COLUMN frames_reused INTEGER NOT NULL DEFAULT 0 CHECK (frames_reused >= 0);
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10)
