"""The output files, written streaming in input order under temporary names.

Files (docs/architecture.md §1.7), all tab-separated:

* `prediction_results.txt` — one row per kept frame, the original's format.
* `prediction_results_highestscore.csv` — one row per chunk with rows; `True` when the
  chunk's max P(virus) >= its max P(others). (Tab-separated despite the name, as the
  original. Rows follow input order, where the original's pandas groupby sorted ids.)
* `sequence_summary.tsv` — one row per input record, with the file it came from and
  its warnings (pipeline/record_warnings.py).
* `embeddings.h5` (optional) — `ids`, `nucleotide`, `protein`, row-aligned with
  `prediction_results.txt`.
* `virus.fna` (when the caller passes each record's sequence: `with_sequences`) — the
  records called virus, as FASTA (pipeline/virus_fasta.py).

Nothing takes a final name until every file is complete and fsynced; the renames put
`prediction_results.txt` last, so its presence means the whole set is there.
"""

from __future__ import annotations

import errno
import functools
import os
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import TextIO

import numpy as np

from .durable import fsync_path
from .embedding_file import EmbeddingFile
from .output_format import (
    EMBEDDINGS,
    HIGHEST_SCORE,
    HIGHEST_SCORE_HEADER,
    LABELS,
    NO_FRAMES,
    OUTPUT_NAMES,
    PREDICTIONS,
    PREDICTIONS_HEADER,
    SUMMARY,
    SUMMARY_HEADER,
    VIRUS_FASTA,
)
from .record_result import RecordResult as RecordResult  # re-exported: its old home
from .record_warnings import record_warnings
from .virus_fasta import fasta_entry


class OutputExistsError(FileExistsError):
    """Raised by `ResultWriter` when the output directory already holds results."""


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


def summary_row(
    result: RecordResult,
    calls: list[tuple[str, bool]],
    source: str,
    chunk_length: int | None = None,
) -> str:
    """The record's `sequence_summary.tsv` row; `source` is the input file it is in,
    `chunk_length` the models' (None: no `shorter_than_chunk` warning)."""
    virus_chunks = sum(is_virus for _, is_virus in calls)
    if not result.frame_ids:
        max_virus, call = "NA", NO_FRAMES
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
        _tsv_field(source),
        record_warnings(
            frames=len(result.frame_ids),
            length=result.length,
            chunk_length=chunk_length,
            n_count=result.n_bases,
        ),
    )
    return "\t".join(map(str, fields)) + "\n"


@functools.lru_cache(maxsize=64)  # one source per input file, asked once per record
def _tsv_field(text: str) -> str:
    """A path as one TSV field: a tab or newline in a file name cannot split the row."""
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


class ResultWriter:
    """Streams `RecordResult`s into the output files; `commit()` publishes them.

    Used as a context manager: leaving the block without `commit()` (an error, a
    kill) removes the temporary files, so no partial output looks complete.

    A file of ours that is already in the directory is replaced only with `force`,
    or when it holds exactly the bytes this writer is publishing (what an earlier,
    interrupted publish of the same results left). `check_free` refuses at once a
    directory that holds results; the daemon passes False, having checked at submit,
    and lets `commit()` tell its own files from someone else's. `shown_as` is how
    messages name the directory (virnucd writes through an opened directory's
    /proc/self/fd path, and names the user's path).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        embedding_dims: tuple[int, int] | None = None,
        force: bool = False,
        check_free: bool = True,
        shown_as: str | os.PathLike[str] | None = None,
        chunk_length: int | None = None,
        with_sequences: bool = False,
    ):
        self.out_dir = Path(out_dir)
        self.with_sequences = with_sequences  # each write() brings the record's sequence
        self.chunk_length = chunk_length  # the models', for the `shorter_than_chunk` warning
        self.shown = Path(shown_as) if shown_as is not None else self.out_dir
        self.force = force
        self.frames = 0
        self.records = 0
        self._committed = False
        self._tmp = {name: self.out_dir / f".{name}.partial" for name in OUTPUT_NAMES}
        self._text: dict[str, TextIO] = {}
        self._h5: EmbeddingFile | None = None
        self._published: list[Path] = []  # final names placed by a commit not yet complete
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if check_free and not force:
            self._check_free()
        try:
            self._open(embedding_dims)
        except BaseException:
            self.abort()
            raise

    def _check_free(self) -> None:
        existing = [name for name in OUTPUT_NAMES if os.path.lexists(self.out_dir / name)]
        if existing:
            raise OutputExistsError(
                f"{self.shown} already holds results ({', '.join(existing)}); "
                "choose another --out or pass --force to replace them"
            )

    def _open(self, embedding_dims: tuple[int, int] | None) -> None:
        for path in self._tmp.values():
            # A new inode each time: an old temporary name may still be a hard link
            # to a published file (a crash inside `_place`), which "w" would truncate.
            path.unlink(missing_ok=True)
        files = [
            (PREDICTIONS, PREDICTIONS_HEADER),
            (HIGHEST_SCORE, HIGHEST_SCORE_HEADER),
            (SUMMARY, SUMMARY_HEADER),
        ]
        if self.with_sequences:
            files.append((VIRUS_FASTA, ""))
        for name, header in files:
            # Ids are ASCII (checked when the input is read); the summary's `source`
            # column is a file name, and virus.fna holds sequences, which may not be:
            # UTF-8, never a failed write.
            lenient = name in (SUMMARY, VIRUS_FASTA)
            encoding = ("utf-8", "backslashreplace") if lenient else ("ascii", "strict")
            self._text[name] = self._tmp[name].open(
                "w", encoding=encoding[0], errors=encoding[1], newline="\n"
            )
            self._text[name].write(header)
        if embedding_dims:
            self._h5 = EmbeddingFile(self._tmp[EMBEDDINGS], embedding_dims)

    def write(self, result: RecordResult, *, source: str = "", sequence: str | None = None) -> None:
        """Append one record's rows; `source` is the input file it came from, `sequence`
        its sequence (required `with_sequences`: a virus call goes to virus.fna)."""
        calls: list[tuple[str, bool]] = []
        if result.frame_ids:  # a record without frames has a summary row only
            calls = chunk_calls(result)
            self._text[PREDICTIONS].writelines(prediction_rows(result))
            self._text[HIGHEST_SCORE].writelines(f"{cid}\t{v}\n" for cid, v in calls)
            if self._h5 is not None:
                self._h5.append(result)
            if self.with_sequences and any(is_virus for _, is_virus in calls):
                if sequence is None:
                    raise ValueError(f"record {result.record_id}: no sequence for virus.fna")
                self._text[VIRUS_FASTA].write(fasta_entry(result.record_id, sequence))
        self._text[SUMMARY].write(summary_row(result, calls, source, self.chunk_length))
        self.frames += len(result.frame_ids)
        self.records += 1

    def commit(self) -> None:
        """Flush, fsync and rename every file into place, predictions last.

        Without `force`, raises `OutputExistsError` when the directory holds one of our
        file names with other bytes than ours (someone else wrote it after the job was
        submitted): checked before any rename, and should the name appear during them,
        `abort()` removes what was placed.
        """
        for handle in self._text.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        names = [SUMMARY, HIGHEST_SCORE]
        if self.with_sequences:
            names.append(VIRUS_FASTA)
        if self._h5 is not None:
            self._h5.close()
            names.append(EMBEDDINGS)
        names.append(PREDICTIONS)
        # Without embeddings, an old embeddings.h5 beside the new predictions would
        # mislead; so would an old virus.fna beside outputs written without sequences.
        stale = [] if self._h5 is not None else [EMBEDDINGS]
        if not self.with_sequences:
            stale.append(VIRUS_FASTA)
        replace = set(names) if self.force else self._ours(names, stale)
        for name in names:
            self._place(name, replace=name in replace)
        for name in stale:
            (self.out_dir / name).unlink(missing_ok=True)
        fsync_path(self.out_dir)
        self._committed = True
        self._published.clear()

    def _ours(self, names: list[str], stale: list[str]) -> set[str]:
        """The names already in place that hold our bytes; raise if any other is there."""
        present = [name for name in names if os.path.lexists(self.out_dir / name)]
        ours = {name for name in present if same_bytes(self.out_dir / name, self._tmp[name])}
        foreign = [name for name in present if name not in ours]
        foreign += [name for name in stale if os.path.lexists(self.out_dir / name)]
        if foreign:
            raise self._foreign_error(foreign)
        return ours

    def _foreign_error(self, names: list[str]) -> OutputExistsError:
        them, it = ", ".join(names), "it" if len(names) == 1 else "them"
        return OutputExistsError(
            f"{self.shown} now holds {them}, which this job did not write ({it} "
            f"appeared while the job ran); nothing was replaced: move {it} away and "
            f"submit again, or submit with --force to replace {it}"
        )

    def _place(self, name: str, *, replace: bool) -> None:
        """Rename the file into place. Unless `replace`, a name that appeared meanwhile
        is never overwritten: a hard link cannot replace a file, a rename would."""
        tmp, final = self._tmp[name], self.out_dir / name
        if replace:
            os.replace(tmp, final)
        else:
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise self._foreign_error([name]) from None
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                if os.path.lexists(final):  # a file system without hard links: check
                    raise self._foreign_error([name]) from None
                os.replace(tmp, final)
            else:
                tmp.unlink()
        self._published.append(final)

    def abort(self) -> None:
        """Remove every temporary file, and what an unfinished commit placed.

        Never raises for a file it cannot close: on a full disk closing flushes and
        fails again, and the files must go all the same, or they keep the disk full.
        """
        if self._committed:
            return
        for handle in self._text.values():
            with suppress(Exception):
                handle.close()  # the file descriptor is closed even when the flush fails
        if self._h5 is not None:
            self._h5.discard()
        for path in [*self._tmp.values(), *self._published]:
            with suppress(OSError):
                path.unlink(missing_ok=True)
        self._published.clear()

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


#: `os.link` errors that mean "this file system has no hard links" (vfat, some FUSE and
#: network file systems), not "the name exists".
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def same_bytes(a: Path, b: Path) -> bool:
    """True when both are regular files with the same contents."""
    try:
        if not (a.is_file() and not a.is_symlink()) or a.stat().st_size != b.stat().st_size:
            return False
        with a.open("rb") as fa, b.open("rb") as fb:
            while chunk := fa.read(1 << 20):
                if chunk != fb.read(len(chunk)):
                    return False
    except OSError:
        return False
    return True
