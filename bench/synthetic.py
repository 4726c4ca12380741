"""Deterministic synthetic inputs: FASTA with long open reading frames, like real
coding DNA, and FASTQ reads that are either coding or have no frame at all.

Random DNA has a stop codon every ~21 codons, so almost no 100-codon frame survives
VirNucPro's "no stop anywhere" rule; genomes are mostly coding. Coding records are
stop-free in one frame (forward or reverse strand) so every chunk yields rows.
No-frame reads carry `NO_FRAME_MOTIF`, which holds a stop codon in all six frames, so
no frame of theirs is kept and no model runs on them: a job over them costs only the
service's own path (planning, reading units, parts, assembly).
"""

from __future__ import annotations

import gzip
import random
import shutil
import sys
from pathlib import Path

STOPS = {"TAA", "TAG", "TGA"}
CODONS = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in STOPS]
COMPLEMENT = str.maketrans("ACGT", "TGCA")
# TTA GTT AGT TAG / T TAG ... / TT AGT TAG ... forward, CTA ACT AAC TAA ... reverse: a
# stop in every frame of both strands, wherever the motif sits in a read.
NO_FRAME_MOTIF = "TTAGTTAGTTAG"
MAX_NO_FRAME_LENGTH = 300  # the shorter chunk length
_TO_BASES = bytes(b"ACGT"[i % 4] for i in range(256))
_TO_QUALITIES = bytes(b"FGHIJ:,#"[i % 8] for i in range(256))


def coding_sequence(rng: random.Random, length: int) -> str:
    seq = "".join(rng.choice(CODONS) for _ in range(length // 3 + 1))[:length]
    return seq.translate(COMPLEMENT)[::-1] if rng.random() < 0.5 else seq


def write_fasta(path: Path, lengths: list[int], seed: int = 7, prefix: str = "contig") -> None:
    rng = random.Random(seed)
    with path.open("w") as out:
        for i, length in enumerate(lengths):
            seq = coding_sequence(rng, length)
            if i % 7 == 3:  # ambiguous bases: their codons are dropped, as the original does
                seq = seq[:100] + "N" * 12 + seq[112:]
            if i % 5 == 4:
                seq = seq.lower()
            out.write(f">{prefix}_{i + 1:05d} length={length}\n")
            out.writelines(seq[j : j + 70] + "\n" for j in range(0, length, 70))


def random_lengths(count: int, seed: int, low: int = 150, high: int = 3000) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(count)]


def no_frame_read(rng: random.Random, length: int) -> str:
    """Random bases with `NO_FRAME_MOTIF` in the middle: no frame survives. A read of
    at most 300 bases is one chunk at either chunk length; a longer one would have
    chunks without the motif."""
    if not len(NO_FRAME_MOTIF) <= length <= MAX_NO_FRAME_LENGTH:
        raise ValueError(f"no-frame reads are {len(NO_FRAME_MOTIF)} to 300 bases, not {length}")
    bases = rng.randbytes(length).translate(_TO_BASES).decode()
    middle = (length - len(NO_FRAME_MOTIF)) // 2
    return bases[:middle] + NO_FRAME_MOTIF + bases[middle + len(NO_FRAME_MOTIF) :]


def write_fastq(
    path: Path,
    count: int,
    *,
    seed: int,
    coding: bool = False,
    length: int = 150,
    duplicates: float = 0.0,
) -> None:
    """`count` reads of `length` bases: coding ones, or no-frame ones (the default).
    A `duplicates` fraction of them, spread evenly, repeat an earlier read's bases
    (PCR duplicates: a read id of their own, the same sequence)."""
    rng = random.Random(seed)
    earlier: list[str] = []
    with path.open("w") as out:
        for i in range(count):
            if earlier and int((i + 1) * duplicates) > int(i * duplicates):
                seq = rng.choice(earlier)
            else:
                seq = coding_sequence(rng, length) if coding else no_frame_read(rng, length)
                earlier.append(seq)
            quality = rng.randbytes(length).translate(_TO_QUALITIES).decode()
            out.write(f"@read_{i + 1:09d}/1\n{seq}\n+\n{quality}\n")


def gzip_copy(plain: Path, gz: Path, level: int = 6) -> None:
    """`plain` compressed as `gzip` does by default (level 6, one member)."""
    with plain.open("rb") as src, gzip.GzipFile(gz, "wb", compresslevel=level, mtime=0) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


if __name__ == "__main__":
    write_fasta(Path(sys.argv[1]), random_lengths(int(sys.argv[2]), seed=int(sys.argv[3])))
