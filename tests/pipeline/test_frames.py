"""Frames against a plain, obviously-correct reference of VirNucPro's steps.

See docs/architecture.md §1.1-1.3.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from virnuc.pipeline.frames import (
    FRAME_NAMES,
    chunk_frames,
    chunk_starts,
    record_frames,
    translate,
)

CODONS = {
    "TTT": "F",
    "TTC": "F",
    "TTA": "L",
    "TTG": "L",
    "CTT": "L",
    "CTC": "L",
    "CTA": "L",
    "CTG": "L",
    "ATT": "I",
    "ATC": "I",
    "ATA": "I",
    "ATG": "M",
    "GTT": "V",
    "GTC": "V",
    "GTA": "V",
    "GTG": "V",
    "TCT": "S",
    "TCC": "S",
    "TCA": "S",
    "TCG": "S",
    "CCT": "P",
    "CCC": "P",
    "CCA": "P",
    "CCG": "P",
    "ACT": "T",
    "ACC": "T",
    "ACA": "T",
    "ACG": "T",
    "GCT": "A",
    "GCC": "A",
    "GCA": "A",
    "GCG": "A",
    "TAT": "Y",
    "TAC": "Y",
    "TAA": "*",
    "TAG": "*",
    "CAT": "H",
    "CAC": "H",
    "CAA": "Q",
    "CAG": "Q",
    "AAT": "N",
    "AAC": "N",
    "AAA": "K",
    "AAG": "K",
    "GAT": "D",
    "GAC": "D",
    "GAA": "E",
    "GAG": "E",
    "TGT": "C",
    "TGC": "C",
    "TGA": "*",
    "TGG": "W",
    "CGT": "R",
    "CGC": "R",
    "CGA": "R",
    "CGG": "R",
    "AGT": "S",
    "AGC": "S",
    "AGA": "R",
    "AGG": "R",
    "GGT": "G",
    "GGC": "G",
    "GGA": "G",
    "GGG": "G",
}


def reference_starts(n: int, length: int) -> list[int]:
    c = math.ceil(n / length)
    r = c * length - n
    q = r // c
    u = r - q * (c - 1)
    shifts = ([q + 1] * u + [q] * max(0, c - 1 - u) + [0])[:c]
    return [k * length - sum(shifts[:k]) for k in range(c)]


def reference_translate(s: str) -> str:
    protein = ""
    for i in range(0, len(s) - 2, 3):
        codon = s[i : i + 3]
        if all(b in "ACGT" for b in codon):
            protein += CODONS[codon]
    return protein


def reference_revcomp(s: str) -> str:
    pairs = {"A": "T", "C": "G", "G": "C", "T": "A"}
    return "".join(pairs.get(b, b) for b in reversed(s))


def reference_rows(record_id: str, seq: str, length: int) -> list[tuple[str, str, str]]:
    rows = []
    for k, start in enumerate(reference_starts(len(seq), length)):
        chunk_id = f"{record_id}_chunk_{k + 1}"
        chunk = seq[start : start + length].upper()
        for strand, prefix in ((chunk, "F"), (reference_revcomp(chunk), "R")):
            for f in (1, 2, 3):
                protein = reference_translate(strand[f - 1 :])
                if protein and "*" not in protein:
                    rows.append(
                        (f"{chunk_id}{prefix}{f}", strand[f - 1 : f + 3 * len(protein)], protein)
                    )
    return rows


dna = st.text(alphabet="ACGTacgtNRYKMSWnx-", min_size=1, max_size=1300)


def test_worked_example_n1000_l300() -> None:
    assert chunk_starts(1000, 300) == [0, 249, 498, 747]


@given(n=st.integers(1, 5000), length=st.sampled_from([300, 500]))
def test_chunk_starts_match_reference(n: int, length: int) -> None:
    assert chunk_starts(n, length) == reference_starts(n, length)


@given(n=st.one_of(st.integers(1, 4), st.sampled_from([299, 300, 301, 600, 900, 1500])))
def test_short_and_exact_multiple_lengths(n: int) -> None:
    starts = chunk_starts(n, 300)
    assert len(starts) == math.ceil(n / 300)
    assert starts[0] == 0
    assert min(starts[-1] + 300, n) == n  # the last chunk always reaches the record's end


@settings(max_examples=300)
@given(seq=dna, length=st.sampled_from([300, 500]))
def test_frames_match_reference(seq: str, length: int) -> None:
    got = [(f.id, f.nucleotides, f.protein) for f in record_frames("rec", seq, length)]
    assert got == reference_rows("rec", seq, length)


@given(seq=st.text(alphabet="ACGTN", max_size=60))
def test_translate_drops_codons_with_other_letters(seq: str) -> None:
    assert translate(seq) == reference_translate(seq)
    assert "X" not in translate(seq)


def test_frame_with_stop_is_discarded_and_slice_is_one_base_longer() -> None:
    # F1 = ATG GCC TAA GC -> "MA*" (discarded); F2 = TGG CCT AAG C -> "WPK"
    frames = {f.id[-2:]: f for f in chunk_frames("c", "ATGGCCTAAGC")}
    assert "F1" not in frames
    assert frames["F2"].protein == "WPK"
    assert frames["F2"].nucleotides == "TGGCCTAAGC"  # 3p + 1 bases, the original's off-by-one


def test_lowercase_is_uppercased_and_chunk_without_clean_frame_yields_nothing() -> None:
    assert [f.protein for f in chunk_frames("c", "atggcc")][:1] == ["MA"]
    assert chunk_frames("c", "NN") == []


def test_a_codon_with_another_letter_is_no_stop() -> None:
    # F1 = ATG TNA GCC: TNA is dropped, not a stop, so F1 is kept as "MA"; F2 and F3
    # hold no whole stop either (TGT NAG CC, GTN AGC C) and are kept, NAG dropped.
    frames = {f.id[-2:]: f.protein for f in chunk_frames("c", "ATGTNAGCC")}
    assert frames["F1"] == "MA"
    assert frames["F2"] == "C"
    assert frames["F3"] == "S"


@given(seq=st.text(alphabet="ACGTNacgt", max_size=40))
def test_no_kept_frame_has_a_stop_and_every_clean_one_is_kept(seq: str) -> None:
    frames = {f.id[-2:]: f.protein for f in chunk_frames("c", seq)}
    forward = seq.upper()
    reverse = forward.translate(str.maketrans("ACGT", "TGCA"))[::-1]
    for name, strand in zip(FRAME_NAMES, [forward] * 3 + [reverse] * 3, strict=True):
        protein = reference_translate(strand[int(name[1]) - 1 :])
        kept = bool(protein) and "*" not in protein
        assert (name in frames) == kept, name
