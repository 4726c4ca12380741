"""The output files, written streaming in input order under temporary names.

Files (docs/architecture.md §1.7), all tab-separated:

* `prediction_results.txt` — one row per kept frame, the original's format.
* `prediction_results_highestscore.csv` — one row per chunk with rows; `True` when the
  chunk's max P(virus) >= its max P(others). (Tab-separated despite the name, as the
  original. Rows follow input order, where the original's pandas groupby sorted ids.)
* `sequence_summary.tsv` — one row per input record.
* `embeddings.h5` (optional) — `ids`, `nucleotide`, `protein`, row-aligned with
  `prediction_results.txt`.

Nothing takes a final name until every file is complete and fsynced; the renames put
`prediction_results.txt` last, so its presence means the whole set is there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TextIO

import h5py
import numpy as np

from .classifier import LABELS

PREDICTIONS = "prediction_results.txt"
HIGHEST_SCORE = "prediction_results_highestscore.csv"
SUMMARY = "sequence_summary.tsv"
EMBEDDINGS = "embeddings.h5"
OUTPUT_NAMES = (PREDICTIONS, HIGHEST_SCORE, SUMMARY, EMBEDDINGS)

PREDICTIONS_HEADER = "Sequence_ID\tPrediction\tscore1\tscore2\n"
HIGHEST_SCORE_HEADER = "Modified_ID\tIs_Virus\n"
SUMMARY_HEADER = "record_id\tlength\tchunks\tframes_scored\tchunks_virus\tmax_virus_score\tcall\n"
_H5_GROWTH = 4096


class OutputExistsError(FileExistsError):
    """Raised by `ResultWriter` when the output directory already holds results."""


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


def format_score(value: np.float32 | float) -> str:
    """As the original: `str()` of a numpy float32, its shortest round-trip form."""
    return str(np.float32(value))


def prediction_rows(result: RecordResult) -> list[str]:
    rows = []
    for frame_id, (p_others, p_virus) in zip(result.frame_ids, result.scores, strict=True):
        label = LABELS[1] if p_virus > p_others else LABELS[0]  # argmax; a tie is class 0
        rows.append(f"{frame_id}\t{label}\t{format_score(p_others)}\t{format_score(p_virus)}\n")
    return rows


def chunk_calls(result: RecordResult) -> list[tuple[str, bool]]:
    """(chunk id, is virus) per chunk with rows, in order of first appearance."""
    best: dict[str, list[float]] = {}
    for frame_id, (p_others, p_virus) in zip(result.frame_ids, result.scores, strict=True):
        maxima = best.setdefault(frame_id[:-2], [p_others, p_virus])  # drop "F1".."R3"
        maxima[0] = max(maxima[0], p_others)
        maxima[1] = max(maxima[1], p_virus)
    return [(chunk_id, bool(v >= o)) for chunk_id, (o, v) in best.items()]


def summary_row(result: RecordResult, calls: list[tuple[str, bool]]) -> str:
    virus_chunks = sum(is_virus for _, is_virus in calls)
    if not result.frame_ids:
        max_virus, call = "NA", "no_frames"
    else:
        max_virus = format_score(result.scores[:, 1].max())
        call = LABELS[1] if virus_chunks else LABELS[0]
    fields = (
        result.record_id,
        result.length,
        result.chunks,
        len(result.frame_ids),
        virus_chunks,
        max_virus,
        call,
    )
    return "\t".join(map(str, fields)) + "\n"


class ResultWriter:
    """Streams `RecordResult`s into the output files; `commit()` publishes them.

    Used as a context manager: leaving the block without `commit()` (an error, a
    kill) removes the temporary files, so no partial output looks complete.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        embedding_dims: tuple[int, int] | None = None,
        force: bool = False,
    ):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._check_free(force)
        self._tmp = {name: self.out_dir / f".{name}.partial" for name in OUTPUT_NAMES}
        self._text: dict[str, TextIO] = {
            name: self._tmp[name].open("w", encoding="ascii", newline="\n")
            for name in (PREDICTIONS, HIGHEST_SCORE, SUMMARY)
        }
        self._text[PREDICTIONS].write(PREDICTIONS_HEADER)
        self._text[HIGHEST_SCORE].write(HIGHEST_SCORE_HEADER)
        self._text[SUMMARY].write(SUMMARY_HEADER)
        self._h5 = _EmbeddingFile(self._tmp[EMBEDDINGS], embedding_dims) if embedding_dims else None
        self.frames = 0
        self.records = 0
        self._committed = False

    def _check_free(self, force: bool) -> None:
        existing = [name for name in OUTPUT_NAMES if (self.out_dir / name).exists()]
        if existing and not force:
            raise OutputExistsError(
                f"{self.out_dir} already holds results ({', '.join(existing)}); "
                "choose another --out or pass --force to replace them"
            )

    def write(self, result: RecordResult) -> None:
        calls = chunk_calls(result)
        self._text[PREDICTIONS].writelines(prediction_rows(result))
        self._text[HIGHEST_SCORE].writelines(f"{cid}\t{v}\n" for cid, v in calls)
        self._text[SUMMARY].write(summary_row(result, calls))
        if self._h5 is not None:
            self._h5.append(result)
        self.frames += len(result.frame_ids)
        self.records += 1

    def commit(self) -> None:
        """Flush, fsync and rename every file into place, predictions last."""
        for handle in self._text.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        names = [SUMMARY, HIGHEST_SCORE]
        if self._h5 is not None:
            self._h5.close()
            fsync_path(self._tmp[EMBEDDINGS])
            names.append(EMBEDDINGS)
        for name in [*names, PREDICTIONS]:
            os.replace(self._tmp[name], self.out_dir / name)
        if not self._h5 and (self.out_dir / EMBEDDINGS).exists():
            (self.out_dir / EMBEDDINGS).unlink()  # a stale one from a --force rerun would mislead
        fsync_path(self.out_dir)
        self._committed = True

    def abort(self) -> None:
        for handle in self._text.values():
            handle.close()
        if self._h5 is not None:
            self._h5.close()
        for path in self._tmp.values():
            path.unlink(missing_ok=True)

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self.abort()


class _EmbeddingFile:
    """Appends rows to resizable HDF5 datasets `ids`, `nucleotide`, `protein`."""

    def __init__(self, path: Path, dims: tuple[int, int]):
        self._file = h5py.File(path, "w")
        self._rows = 0
        string = h5py.string_dtype(encoding="ascii")
        self._ids = self._file.create_dataset(
            "ids", (0,), string, maxshape=(None,), chunks=(_H5_GROWTH,)
        )
        self._sets = [
            self._file.create_dataset(name, (0, dim), "f4", maxshape=(None, dim), chunks=(256, dim))
            for name, dim in zip(("nucleotide", "protein"), dims, strict=True)
        ]

    def append(self, result: RecordResult) -> None:
        n = len(result.frame_ids)
        if n == 0:
            return
        if result.nucleotide is None or result.protein is None:
            raise ValueError(f"record {result.record_id}: embeddings were not kept")
        end = self._rows + n
        self._ids.resize((end,))
        self._ids[self._rows : end] = result.frame_ids
        for dataset, rows in zip(self._sets, (result.nucleotide, result.protein), strict=True):
            dataset.resize((end, dataset.shape[1]))
            dataset[self._rows : end] = rows
        self._rows = end

    def close(self) -> None:
        if self._file.id.valid:
            self._file.flush()
            self._file.close()


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a rename is durable only once its directory is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
