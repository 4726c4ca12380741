"""One input record's results, as the outputs need them (written by `outputs`, the
embeddings file and the workers' parts alike)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class RecordResult:
    """Everything the outputs need about one input record, frames in output order."""

    record_id: str
    length: int
    chunks: int
    frame_ids: list[str]
    scores: np.ndarray  # [frames, 2] float32: P(others), P(virus)
    nucleotide: np.ndarray | None = None  # [frames, nucleotide dim] float32
    protein: np.ndarray | None = None  # [frames, protein dim] float32
    n_bases: int | None = None  # its N/n letters (None: not known, a part of an older virnuc)
    frames_reused: int = 0  # frames whose rows came from an identical frame (not written)
