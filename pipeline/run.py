"""One whole prediction in this process: validate the inputs, predict, write the outputs.

This is the reference the daemon's results are compared with, and what the benchmark
times as "our pipeline".
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .fasta import FastaRecord
from .inputs import read_job_records, scan_inputs
from .models import ModelSet
from .outputs import ResultWriter
from .predict import Predictor
from .run_info import build_run_info, write_run_info


@dataclass(frozen=True, slots=True)
class Progress:
    records_done: int
    records_total: int
    frames_done: int


def predict_file(
    models: ModelSet,
    input_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    save_embeddings: bool = False,
    force: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> Progress:
    """Predict every record of `input_path` (one FASTA or FASTQ file, or a list of
    them, read in order as one input) into `out_dir`, then `run_info.json` beside
    them; returns the final counts."""
    began = time.monotonic()
    paths = [input_path] if isinstance(input_path, str | os.PathLike) else list(input_path)
    sources = [os.fspath(path) for path in paths]
    # fails fast, before any model time is spent
    total = sum(scan.records for scan in scan_inputs(sources))
    dims = (models.dnabert.dim, models.esm.dim) if save_embeddings else None
    predictor = Predictor(models, keep_embeddings=save_embeddings)
    records = read_job_records(sources)
    # The file and sequence of each record handed out, oldest first: only the records
    # in flight in the predictor (about a block of frames), so memory stays bounded.
    handed_out: deque[tuple[str, str]] = deque()

    def tracked() -> Iterator[FastaRecord]:
        for source, record in records:
            handed_out.append((source, record.sequence))
            yield record

    with ResultWriter(
        Path(out_dir),
        embedding_dims=dims,
        force=force,
        chunk_length=models.spec.chunk_length,
        with_sequences=True,
    ) as writer:
        for result in predictor.predict(tracked()):  # results come back in input order
            source, sequence = handed_out.popleft()
            writer.write(result, source=source, sequence=sequence)
            if on_progress is not None:
                on_progress(Progress(writer.records, total, writer.frames))
        writer.commit()
    options = {"model_set": None, "save_embeddings": save_embeddings, "force": force}
    info = build_run_info(
        models.spec,
        inputs=sources,
        output=os.fspath(out_dir),
        devices=[str(models.device)],
        options=options,
        seconds=time.monotonic() - began,
    )
    write_run_info(out_dir, info)  # after the outputs, as virnucd's report step does
    return Progress(writer.records, total, writer.frames)
