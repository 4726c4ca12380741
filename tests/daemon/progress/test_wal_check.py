"""A damaged `virnuc.db-wal` stops virnucd (exit 3) instead of SQLite silently dropping
the committed transactions after the damage; a torn final write is not damage.

The WAL files are real ones: SQLite writes them, and a copy is taken while the
connection is still open, as a SIGKILL would leave them (see daemon/progress/wal_check.py).
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import struct
from pathlib import Path

import pytest

from virnuc.daemon.progress.connection import close_emptying_wal, open_connection
from virnuc.daemon.progress.log import ProgressLogError
from virnuc.daemon.progress.wal_check import check_wal, checksum

from tests.support.seeds import seed

TRANSACTIONS = 8
ROW = 3000  # bytes: about one page per row, so each transaction writes a few frames


def wal_with_transactions(tmp_path: Path, count: int = TRANSACTIONS, row: int = ROW) -> Path:
    """A copy of a database whose WAL holds `count` committed transactions (one row
    each) that were never checkpointed; returns the copy's database path."""
    live = tmp_path / "live"
    live.mkdir()
    conn = sqlite3.connect(live / "virnuc.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the table's creation too stays in the WAL
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, payload BLOB)")
    for n in range(count):
        conn.execute("INSERT INTO t VALUES (?, randomblob(?))", (n, row))
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("virnuc.db", "virnuc.db-wal"):  # no -shm: SQLite rebuilds it from the WAL
        shutil.copy(live / name, copy / name)
    conn.close()
    return copy / "virnuc.db"


def wal_of(database: Path) -> Path:
    return database.with_name(database.name + "-wal")


def frames(wal: Path) -> list[tuple[int, int]]:
    """(offset, database size or 0) of each whole frame, read independently of wal_check."""
    data = wal.read_bytes()
    page_size = struct.unpack_from(">I", data, 8)[0]
    size = 24 + page_size
    return [
        (offset, struct.unpack_from(">I", data, offset + 4)[0])
        for offset in range(32, len(data) - size + 1, size)
    ]


def rows_sqlite_sees(database: Path, tmp_path: Path) -> int:
    """How many rows plain SQLite finds, without a word of complaint (in a copy, as
    opening changes the files)."""
    look = tmp_path / "look"
    shutil.rmtree(look, ignore_errors=True)
    look.mkdir()
    shutil.copy(database, look / database.name)
    shutil.copy(wal_of(database), wal_of(look / database.name))
    conn = sqlite3.connect(look / database.name)
    try:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 't'").fetchall():
            return 0  # its creation was in the WAL too
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        conn.close()


def opens(database: Path) -> None:
    """Open as virnucd does (check_wal, quick_check, migrations); raise if refused."""
    open_connection(str(database), None).close()


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as raw:
        raw.seek(offset)
        raw.write(data)


def test_an_intact_wal_opens(tmp_path: Path) -> None:
    database = wal_with_transactions(tmp_path)
    assert len(frames(wal_of(database))) > TRANSACTIONS
    assert rows_sqlite_sees(database, tmp_path) == TRANSACTIONS
    opens(database)


def test_bytes_overwritten_in_a_middle_frame_are_damage_naming_the_wal(tmp_path: Path) -> None:
    database = wal_with_transactions(tmp_path)
    wal = wal_of(database)
    offset, _ = frames(wal)[len(frames(wal)) // 2]
    overwrite(wal, offset + 24 + 1000, b"\xa5" * 64)  # inside the frame's page
    # The hole this closes: SQLite opens it without a word, half the rows gone.
    assert rows_sqlite_sees(database, tmp_path) < TRANSACTIONS - 1
    with pytest.raises(ProgressLogError) as refused:
        opens(database)
    message = str(refused.value)
    assert f"{wal} is damaged" in message
    assert "committed transactions from frame" in message
    assert "restore the state directory from a backup" in message.lower()
    assert f"move {database} and {wal} aside" in message


def test_a_damaged_frame_header_is_damage_too(tmp_path: Path) -> None:
    database = wal_with_transactions(tmp_path)
    wal = wal_of(database)
    offset, _ = frames(wal)[2]
    overwrite(wal, offset + 8, b"\0" * 8)  # its salts: SQLite stops at this frame
    with pytest.raises(ProgressLogError, match=r"virnuc\.db-wal is damaged"):
        opens(database)


def test_a_wal_truncated_mid_frame_opens(tmp_path: Path) -> None:
    database = wal_with_transactions(tmp_path)
    wal = wal_of(database)
    last, _ = frames(wal)[-1]
    os.truncate(wal, last + 100)  # the final frame, the commit, half written
    assert rows_sqlite_sees(database, tmp_path) == TRANSACTIONS - 1
    opens(database)


def test_garbage_appended_to_a_wal_opens(tmp_path: Path) -> None:
    database = wal_with_transactions(tmp_path)
    with wal_of(database).open("ab") as raw:
        raw.write(random.Random(seed(7)).randbytes(3 * 4120 + 77))
    assert rows_sqlite_sees(database, tmp_path) == TRANSACTIONS
    opens(database)


def test_damage_in_the_final_transaction_is_a_torn_write_and_opens(tmp_path: Path) -> None:
    database = wal_with_transactions(tmp_path)
    wal = wal_of(database)
    last_but_one = [offset for offset, db_size in frames(wal) if db_size][-2]
    first_of_final = next(offset for offset, _ in frames(wal) if offset > last_but_one)
    overwrite(wal, first_of_final + 24 + 500, b"\xa5" * 64)
    assert rows_sqlite_sees(database, tmp_path) == TRANSACTIONS - 1
    opens(database)


def test_a_wal_without_its_magic_number_is_damage(tmp_path: Path) -> None:
    database = wal_with_transactions(tmp_path)
    overwrite(wal_of(database), 0, b"\0\0\0\0")
    assert rows_sqlite_sees(database, tmp_path) == 0  # SQLite ignored all of it
    with pytest.raises(ProgressLogError, match="no WAL magic number"):
        opens(database)


def test_an_all_zero_wal_opens(tmp_path: Path) -> None:
    """What a crash leaves when the first write into a new WAL never reached the disk."""
    database = wal_with_transactions(tmp_path)
    wal = wal_of(database)
    wal.write_bytes(bytes(wal.stat().st_size))
    opens(database)


def big_endian(wal: Path) -> None:
    """Rewrite `wal` with big-endian checksums (magic 0x377f0683), as SQLite on a
    big-endian machine writes it; a reader must take either."""
    data = bytearray(wal.read_bytes())
    page_size = struct.unpack_from(">I", data, 8)[0]

    def words(start: int, end: int) -> list[int]:
        return list(struct.unpack_from(f">{(end - start) // 4}I", data, start))

    struct.pack_into(">I", data, 0, 0x377F0683)
    sums = checksum(words(0, 24), 0, 0)
    struct.pack_into(">2I", data, 24, *sums)
    for offset in range(32, len(data) - 24 - page_size + 1, 24 + page_size):
        sums = checksum(words(offset, offset + 8), *sums)
        sums = checksum(words(offset + 24, offset + 24 + page_size), *sums)
        struct.pack_into(">2I", data, offset + 16, *sums)
    wal.write_bytes(data)


def test_big_endian_checksums_are_read(tmp_path: Path) -> None:
    database = wal_with_transactions(tmp_path)
    big_endian(wal_of(database))
    assert rows_sqlite_sees(database, tmp_path) == TRANSACTIONS  # SQLite agrees
    opens(database)


def test_big_endian_checksums_are_checked(tmp_path: Path) -> None:
    database = wal_with_transactions(tmp_path)
    wal = wal_of(database)
    big_endian(wal)
    offset, _ = frames(wal)[3]
    overwrite(wal, offset + 24 + 2000, b"\xa5" * 16)
    with pytest.raises(ProgressLogError, match=r"virnuc\.db-wal is damaged"):
        opens(database)


def test_a_4_mb_wal_of_many_transactions_is_read_to_its_end_and_opens(tmp_path: Path) -> None:
    """The size autocheckpointing lets a WAL reach (its speed is measured in the
    README, not asserted here)."""
    database = wal_with_transactions(tmp_path, count=500, row=3500)
    assert wal_of(database).stat().st_size >= 4 * 1024 * 1024
    check_wal(str(database))


def test_a_clean_close_leaves_an_empty_wal_even_with_a_reader_open(tmp_path: Path) -> None:
    """SQLite empties the WAL only when the last connection closes; virnucd's read-only
    reader closes after the writer and cannot, so the writer checkpoints on close."""
    database = tmp_path / "virnuc.db"
    conn = open_connection(str(database), None)
    reader = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    reader.execute("SELECT count(*) FROM sqlite_master").fetchall()
    conn.execute("PRAGMA user_version").fetchall()
    assert wal_of(database).stat().st_size > 0
    close_emptying_wal(conn)
    reader.close()
    assert wal_of(database).stat().st_size == 0
