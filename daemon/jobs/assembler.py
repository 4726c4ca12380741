"""Assemble a job's recorded parts, in input order, into its final output files.

Nothing is trusted that can be checked again: each part's size and SHA-256 are
re-verified against SQLite, the parts must tile the input from record 0 to the last
without gap or overlap, each part's header must match its row, and its record ids
must be the input's ids for that range (read afresh from the inputs, file after
file), with every frame id belonging to its record. Each record's row in
`sequence_summary.tsv` names the file it came from (`source`); the same pass over the
inputs gives `virus.fna` the sequences of the records called virus, one record at a
time, and it is published with the other outputs. A part that fails any check raises
`PartNeedsRecompute`: the scheduler deletes it and what follows in its unit, and the
records are computed again. Output files take their final names only at the end
(`ResultWriter`), so an interrupted assembly leaves nothing that looks complete.

The outputs are written through the output directory opened again as the job's owner
and checked to be the one opened at submit (caller_files.reopen_output): a directory
swapped for a symlink since fails the job with nothing written.

Publishing is the job's commit point: a cancel (a kill) seen before it stops the
assembly with nothing published; once the outputs are renamed into place the job is
done, whatever comes after. A crash between the rename and `done` being recorded
leaves the job assembling: on restart it is assembled again, and `ResultWriter`
finds the same bytes in place and keeps them (docs/architecture.md §4).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from virnuc.faults import Faults
from virnuc.parts import PartContents, PartCorrupt, read_part
from virnuc.pipeline.fasta import FastaRecord
from virnuc.pipeline.inputs import read_job_records
from virnuc.pipeline.output_format import OUTPUT_NAMES
from virnuc.pipeline.outputs import RecordResult, ResultWriter

from ..progress.log import JobRow, PartRow, ProgressLog
from .caller_files import WriteTarget, reopen_output
from .input_check import check_unchanged
from .result_access import hand_over


class PartNeedsRecompute(Exception):
    """Raised by `assemble` for a part that failed a check; names where to restart."""

    def __init__(self, part: PartRow, reason: str):
        super().__init__(f"unit {part.unit_id} part at record {part.first_record}: {reason}")
        self.unit_id = part.unit_id
        self.first_record = part.first_record
        self.reason = reason


class AssemblyCancelled(Exception):
    """Raised inside assembly when the job was killed meanwhile."""


class _Assembly:
    """State carried across parts; each method runs in a worker thread."""

    def __init__(self, job: JobRow, cancel: threading.Event, faults: Faults, out_dir: str):
        self.job = job
        self.out_dir = out_dir  # the output directory as opened again (WriteTarget.path)
        self.cancel = cancel
        self.faults = faults
        self.writer: ResultWriter | None = None
        self.next_record = 0
        self.input_records: Iterator[tuple[str, FastaRecord]] = read_job_records(job.inputs)

    def add(self, row: PartRow) -> None:
        if self.cancel.is_set():
            raise AssemblyCancelled(self.job.job_id)
        try:
            part = read_part(Path(row.path), size=row.size, sha256=row.sha256)
        except PartCorrupt as exc:
            raise PartNeedsRecompute(row, exc.reason) from exc
        self._check_place(row, part)
        results = list(part.results())
        inputs = self._check_ids(row, results)
        writer = self._writer(part)
        for result, (source, record) in zip(results, inputs, strict=True):
            writer.write(result, source=source, sequence=record.sequence)
        self.next_record += row.record_count
        self.faults.hit("mid_assembly")

    def _check_place(self, row: PartRow, part: PartContents) -> None:
        if row.first_record != self.next_record:
            raise PartNeedsRecompute(
                row,
                f"starts at record {row.first_record}, expected "
                f"{self.next_record}: parts do not tile the input",
            )
        header = (part.job_id, part.unit_id, part.first_record, part.record_count, part.frames)
        expected = (row.job_id, row.unit_id, row.first_record, row.record_count, row.frames)
        if header != expected:
            raise PartNeedsRecompute(
                row, f"its header {header} does not match its record {expected}"
            )

    def _check_ids(
        self, row: PartRow, results: list[RecordResult]
    ) -> list[tuple[str, FastaRecord]]:
        """Each result is the input's next record; returns each one's file and record."""
        inputs = []
        for result in results:
            source, record = next(self.input_records, ("", None))
            if record is None or record.id != result.record_id:
                expected = "the end of the input" if record is None else f"record {record.id!r}"
                raise PartNeedsRecompute(
                    row, f"holds record {result.record_id!r} where the input has {expected}"
                )
            prefix = f"{result.record_id}_chunk_"
            if result.frame_ids and not all(f.startswith(prefix) for f in result.frame_ids):
                raise PartNeedsRecompute(row, f"record {result.record_id!r} has foreign frame ids")
            inputs.append((source, record))
        return inputs

    def _writer(self, part: PartContents) -> ResultWriter:
        if self.writer is None:
            dims = None
            if self.job.save_embeddings:
                nucleotide, protein = part.arrays.get("nucleotide"), part.arrays.get("protein")
                dims = _dims(nucleotide, protein)
            # The outputs were checked free at submit; a file here now is either ours
            # (a publish that a crash interrupted: the same bytes) or someone else's,
            # which commit() refuses to replace unless the job was submitted with force.
            self.writer = ResultWriter(
                self.out_dir,
                embedding_dims=dims,
                force=self.job.force,
                check_free=False,
                shown_as=self.job.output,
                chunk_length=self.job.spec.chunk_length,
                with_sequences=True,
            )
        return self.writer

    def finish(self) -> None:
        if self.cancel.is_set():  # the last chance to stop: past here it publishes
            raise AssemblyCancelled(self.job.job_id)
        total = self.job.records_total or 0
        if self.next_record != total:
            raise RuntimeError(f"parts cover {self.next_record} of {total} records")
        if next(self.input_records, None) is not None:
            raise RuntimeError("the input has more records than were planned")
        if self.writer is None:
            raise RuntimeError("no parts recorded")
        check_unchanged(self.job.inputs, self.job.input_fingerprint)
        self.writer.commit()
        hand_over(self.out_dir, OUTPUT_NAMES, self.job.owner)
        self.faults.hit("after_publish")

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def _dims(nucleotide: np.ndarray | None, protein: np.ndarray | None) -> tuple[int, int]:
    if nucleotide is None or protein is None:
        raise RuntimeError("the job saves embeddings but its parts hold none")
    return int(nucleotide.shape[1]), int(protein.shape[1])


async def assemble(
    progress: ProgressLog, job: JobRow, cancel: threading.Event, faults: Faults | None = None
) -> None:
    """Write the job's final outputs from its recorded parts, or raise why not
    (OutputMoved: its output directory is not the one submitted)."""
    # A changed input fails the job here, not as parts whose ids no longer match.
    await asyncio.to_thread(check_unchanged, job.inputs, job.input_fingerprint)
    target = await asyncio.to_thread(reopen_output, job.output, job.output_identity, job.owner)
    assembly = _Assembly(job, cancel, faults or Faults(), target.path)
    try:
        async for row in progress.iter_parts(job.job_id):
            await _step(assembly.add, row)
        await _step(assembly.finish)
    except BaseException as exc:
        # One thread removes what was written, then closes the directory: a cancel
        # cannot close it (and free its number for another) under a running abort.
        await asyncio.shield(asyncio.to_thread(_abort, assembly, target))
        if isinstance(exc, OSError):
            target.shown(exc, job.output)
        raise
    target.close()


def _abort(assembly: _Assembly, target: WriteTarget) -> None:
    try:
        assembly.abort()
    finally:
        target.close()


async def _step(method: Callable[..., None], *args: object) -> None:
    """Run one step in a thread. Cancelled, it still waits for the thread to end (the
    cancel event stops the next step), so `abort` never races a step that would go
    on to open or fill the output files after it."""
    thread = asyncio.ensure_future(asyncio.to_thread(method, *args))
    try:
        await asyncio.shield(thread)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await thread
        raise
