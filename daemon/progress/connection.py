"""The progress log's SQLite connection: opened with its pragmas, migrated, and one
transaction per write method. Everything here runs on the log's own thread."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from . import schema
from .rows import ProgressLogError, SchemaVersionError
from .wal_check import check_wal

P = ParamSpec("P")
T = TypeVar("T")


class HasConnection(Protocol):
    conn: sqlite3.Connection


S = TypeVar("S", bound=HasConnection)


def transaction(method: Callable[Concatenate[S, P], T]) -> Callable[Concatenate[S, P], T]:
    """Run a store method as one write transaction: all of it commits, or none."""

    @functools.wraps(method)
    def wrapper(store: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        conn = store.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = method(store, *args, **kwargs)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    return wrapper


def open_connection(path: str, trace: Callable[[str], None] | None) -> sqlite3.Connection:
    """Open and configure the connection; runs on the log's thread, which then owns it."""
    check_wal(path)  # before SQLite opens it and silently drops what a damaged WAL holds
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    try:
        conn.set_trace_callback(trace)
        check_intact(conn, path)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ProgressLogError(
                f"{path}: SQLite would not use WAL mode (got {mode!r}); "
                "put the state directory on a local filesystem"
            )
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def check_intact(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a damaged file at once, naming it, instead of failing on some later
    query (`quick_check` reads every page; seconds even for a large log)."""
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:  # not a database at all, or its header is gone
        problems = [str(exc)]
    if problems != ["ok"]:
        raise ProgressLogError(
            f"{path} is damaged ({'; '.join(problems)}). Restore it from a backup, or "
            f"move it aside with its -wal and -shm files to start with an empty log "
            "(its jobs are then forgotten; their part files stay in jobs/)"
        )


def close_emptying_wal(conn: sqlite3.Connection) -> None:
    """Close the writer's connection, emptying the WAL first: SQLite does so itself only
    when the last connection closes, and the read-only reader closes after the writer
    and cannot. A WAL left full would hold transactions a damaged WAL file could take
    with it (see wal_check)."""
    with contextlib.suppress(sqlite3.Error):  # busy or a full disk: the WAL stays
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def close_opened(opening: Future[sqlite3.Connection]) -> None:
    """Close a connection whose opening was abandoned; queued after it, on its thread."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Apply the missing migrations, each atomically with its `user_version` bump."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    known = len(schema.MIGRATIONS)
    if version > known:
        raise SchemaVersionError(
            f"{path}: schema version {version} is newer than this virnuc knows ({known}); "
            "run a newer virnucd, or move the state directory aside"
        )
    for target in range(version + 1, known + 1):
        script = schema.MIGRATIONS[target - 1]
        # executescript commits any open transaction first, so BEGIN/COMMIT go inside.
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
