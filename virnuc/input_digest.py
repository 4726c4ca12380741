"""A unit's digest: blake2b-128 (32 lowercase hex digits) of its bytes of the input.

The planner digests each unit's byte range [its start offset, the next unit's start
or the end of the data) in its streaming pass; the worker digests the same range as it
reads the unit and refuses to finish it when the two differ: the input was rewritten
since planning, even if its size and modification time were kept. Offsets and bytes
are those of the decompressed stream, as everywhere (a `.gz` input is digested after
gunzipping).
"""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

from virnuc.pipeline.fasta import open_binary

DIGEST_SIZE = 16  # bytes; 32 hex digits
CHUNK = 1 << 20


def new_digest() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=DIGEST_SIZE)


def hash_bytes(raw: BinaryIO, digest: hashlib.blake2b, count: int) -> int:
    """Feed the next `count` bytes of `raw` to `digest`; returns how many there were
    (fewer at the end of the data)."""
    left = count
    while left > 0:
        chunk = raw.read(min(CHUNK, left))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk)
    return count - left


def digest_of_range(path: str | os.PathLike[str], start: int, end: int) -> str:
    """The digest of bytes [start, end) of the input as it is now (raises OSError)."""
    digest = new_digest()
    with open_binary(path) as raw:
        if start:
            raw.seek(start)
        hash_bytes(raw, digest, end - start)
    return digest.hexdigest()
