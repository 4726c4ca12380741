"""virnuc/input_digest.py: a unit's digest, of its bytes in the decompressed stream
(the planner and worker compare them: tests/worker/test_unit_digest.py)."""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

from virnuc.input_digest import digest_of_range, hash_bytes, new_digest

DATA = b">a\nACGT\n>b\nGGGG\n"


def test_a_range_digest_is_blake2b_128_of_those_bytes_plain_or_gzipped(tmp_path: Path) -> None:
    plain, packed = tmp_path / "in.fa", tmp_path / "in.fa.gz"
    plain.write_bytes(DATA)
    packed.write_bytes(gzip.compress(DATA))
    want = hashlib.blake2b(DATA[8:16], digest_size=16).hexdigest()

    assert len(want) == 32
    assert digest_of_range(plain, 8, 16) == want
    assert digest_of_range(packed, 8, 16) == want
    assert digest_of_range(plain, 0, 8) != want


def test_hashing_past_the_end_stops_there_and_says_how_much_it_read() -> None:
    digest = new_digest()
    assert hash_bytes(io.BytesIO(DATA), digest, 1000) == len(DATA)
    assert digest.hexdigest() == hashlib.blake2b(DATA, digest_size=16).hexdigest()
