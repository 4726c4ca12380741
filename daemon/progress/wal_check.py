"""Refuse a damaged write-ahead log before SQLite opens the database.

After a crash (SIGKILL, power loss) `virnuc.db-wal` still holds committed transactions
that were never copied into `virnuc.db`. When SQLite opens the database it rebuilds
its index of that file and keeps frames only while each one checks out; from the
first frame that does not, it treats the WAL as ended. If bytes in the middle were
damaged, every transaction after them vanishes without an error: a running job is
forgotten, a finished one is `running` again. `PRAGMA quick_check` cannot see this,
as the lost frames are no longer part of the database it checks. So we read the WAL
first, as SQLite will (https://www.sqlite.org/fileformat2.html#walformat).

The rule:

* No WAL, an empty one, or one of only zero bytes: fine. Nothing in it can have
  been committed (a commit is fsynced, header included); all zeros is what a crash
  leaves when the first write into a fresh WAL never reached the disk.
* A header SQLite would reject (too short, wrong magic, version or page size, bad
  checksum): damage. SQLite would ignore every frame in the file.
* Otherwise find the valid prefix as SQLite's recovery does: frames count while
  their salts are the header's, their page number is not 0, and the cumulative
  checksum matches; a partial frame at the end is no frame. Let K be the first
  frame that fails. SQLite drops K, everything after it, and the frames of the
  unfinished transaction before it.
* Count the commit frames (database size != 0) from K on that carry the header's
  salts. Frames with other salts are left over from before the WAL was last reset
  (already checkpointed) or are garbage, so they are not counted. K's transaction
  ends at the first of these commit frames. If there is at most one, K lies in the
  final transaction: a crash while writing it can leave its frames torn in any
  order (only the commit's fsync orders them), and it was never acknowledged, so
  losing it is normal. Two or more mean a transaction that was committed and
  fsynced (virnucd uses synchronous=FULL), then followed by others, would be
  dropped: damage.

Consequently damage inside the final transaction is let through (it cannot be told
from a torn write), and so is damage that destroys the header of the last-but-one
commit frame: it then looks like part of the final transaction.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence

from .rows import ProgressLogError

WAL_MAGIC = 0x377F0682  # the low bit set (0x377f0683) means big-endian checksum words
WAL_VERSION = 3007000
WAL_HEADER = struct.Struct(">8I")  # magic, version, page size, checkpoint seq, salts, checksum
FRAME_HEADER = struct.Struct(">6I")  # page no, db size if commit, salts, checksum
MASK = 0xFFFFFFFF


def check_wal(db_path: str) -> None:
    """Raise ProgressLogError if opening `db_path` would silently drop committed
    transactions from its `-wal` file; return if there is nothing to lose."""
    wal = f"{db_path}-wal"
    try:
        with open(wal, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ProgressLogError(f"cannot read {wal}: {exc}") from exc
    problem = find_damage(data)
    if problem is not None:
        raise ProgressLogError(
            f"{wal} is damaged: {problem}. Restore the "
            f"state directory from a backup, or move {db_path} and {wal} aside to start "
            "with an empty log (its jobs are then forgotten; their part files stay in jobs/)"
        )


def find_damage(data: bytes) -> str | None:
    """What committed data SQLite would drop from WAL contents `data`, or None."""
    if not data.strip(b"\0"):
        return None
    ignored = "so SQLite would ignore every transaction in it"
    if len(data) < WAL_HEADER.size:
        return f"it is {len(data)} bytes, too short for a WAL header, {ignored}"
    magic, version, page_size, _, salt1, salt2, check1, check2 = WAL_HEADER.unpack_from(data)
    if magic & ~1 != WAL_MAGIC:
        return f"its header has no WAL magic number (0x{magic:08x}), {ignored}"
    if version != WAL_VERSION:
        return f"its header names WAL version {version}, which SQLite cannot read"
    if not 512 <= page_size <= 65536 or page_size & (page_size - 1):
        return f"its header names an impossible page size {page_size}, {ignored}"

    # Every offset below is a multiple of 4, so the file is read as 32-bit words once
    # (array "I" is 32 bits wherever CPython runs on Linux).
    words = array("I", data[: len(data) // 4 * 4])
    if (sys.byteorder == "big") != bool(magic & 1):
        words.byteswap()
    sums = checksum(words[0:6], 0, 0)
    if sums != (check1, check2):
        return f"its header fails its checksum, {ignored}"

    frame_size = FRAME_HEADER.size + page_size
    frames = (len(data) - WAL_HEADER.size) // frame_size
    first_bad = None
    for i in range(frames):
        offset = WAL_HEADER.size + i * frame_size
        page_no, _, frame_salt1, frame_salt2, f_check1, f_check2 = FRAME_HEADER.unpack_from(
            data, offset
        )
        if (frame_salt1, frame_salt2) != (salt1, salt2) or page_no == 0:
            first_bad = i
            break
        word = offset // 4
        # The checksum runs on from the previous frame's: over this frame header's
        # first 8 bytes, then its page (the 16 bytes between are salts and checksum).
        sums = checksum(words[word : word + 2], *sums)
        sums = checksum(words[word + 6 : word + 6 + page_size // 4], *sums)
        if sums != (f_check1, f_check2):
            first_bad = i
            break
    if first_bad is None:
        return None

    commits = 0
    for i in range(first_bad, frames):
        _, db_size, frame_salt1, frame_salt2, _, _ = FRAME_HEADER.unpack_from(
            data, WAL_HEADER.size + i * frame_size
        )
        if db_size != 0 and (frame_salt1, frame_salt2) == (salt1, salt2):
            commits += 1
    if commits < 2:  # at most the final, unacknowledged transaction is lost: a torn write
        return None
    return (
        f"{commits} committed transactions from frame {first_bad + 1} on fail their "
        "checksum, and SQLite would silently drop them"
    )


def checksum(words: Sequence[int], s0: int, s1: int) -> tuple[int, int]:
    """SQLite's WAL checksum of `words` (an even count), continuing from (s0, s1)."""
    pairs = iter(words)
    for x0, x1 in zip(pairs, pairs, strict=True):
        s0 = (s0 + x0 + s1) & MASK
        s1 = (s1 + x1 + s0) & MASK
    return s0, s1
