"""Complete prediction outputs for the report's tests, written by the real writer."""

from pathlib import Path

import numpy as np

from virnuc.pipeline.frames import FRAME_NAMES, chunk_starts
from virnuc.pipeline.outputs import RecordResult, ResultWriter


def record(i: int, p_max: float, length: int = 1000, chunk_length: int = 300) -> RecordResult:
    """Record `rec{i}`: two frames per chunk; chunk 1 reaches P(virus) `p_max`."""
    chunks = len(chunk_starts(length, chunk_length))
    ids, p_virus = [], []
    for k in range(chunks):
        for frame in FRAME_NAMES[:2]:
            ids.append(f"rec{i}_chunk_{k + 1}{frame}")
            p_virus.append(p_max if k == 0 else p_max / 3)
    pv = np.array(p_virus, dtype=np.float32)
    return RecordResult(f"rec{i}", length, chunks, ids, np.stack([1 - pv, pv], axis=1))


def write_outputs(out: Path, results: list[RecordResult]) -> None:
    with ResultWriter(out) as writer:
        for r in results:
            writer.write(r)
        writer.commit()
