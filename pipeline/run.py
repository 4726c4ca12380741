"""One whole prediction in this process: validate the FASTA, predict, write the outputs.

This is the reference the daemon's results are compared with, and what the benchmark
times as "our pipeline".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .fasta import read_records, scan_fasta
from .models import ModelSet
from .outputs import ResultWriter
from .predict import Predictor


@dataclass(frozen=True, slots=True)
class Progress:
    records_done: int
    records_total: int
    frames_done: int


def predict_file(
    models: ModelSet,
    input_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    save_embeddings: bool = False,
    force: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> Progress:
    """Predict every record of `input_path` into `out_dir`; returns the final counts."""
    total = scan_fasta(input_path).records  # fails fast, before any model time is spent
    dims = (models.dnabert.dim, models.esm.dim) if save_embeddings else None
    predictor = Predictor(models, keep_embeddings=save_embeddings)
    with ResultWriter(Path(out_dir), embedding_dims=dims, force=force) as writer:
        for result in predictor.predict(read_records(input_path)):
            writer.write(result)
            if on_progress is not None:
                on_progress(Progress(writer.records, total, writer.frames))
        writer.commit()
    return Progress(writer.records, total, writer.frames)
