"""Deterministic synthetic FASTA with long open reading frames, like real coding DNA.

Random DNA has a stop codon every ~21 codons, so almost no 100-codon frame survives
VirNucPro's "no stop anywhere" rule; genomes are mostly coding. These records are
stop-free in one frame (forward or reverse strand) so every chunk yields rows.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

STOPS = {"TAA", "TAG", "TGA"}
CODONS = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in STOPS]
COMPLEMENT = str.maketrans("ACGT", "TGCA")


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


if __name__ == "__main__":
    write_fasta(Path(sys.argv[1]), random_lengths(int(sys.argv[2]), seed=int(sys.argv[3])))
