"""The assembler, in process: recorded parts (written by the real part writer) become
outputs byte-equal to a direct write of the same results, in input order whatever the
recording order; any part that fails a check names its unit and first record; a
cancel or a failure leaves no output that looks complete."""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import pytest_asyncio

from virnuc.daemon.jobs.assembler import AssemblyCancelled, PartNeedsRecompute, assemble
from virnuc.daemon.jobs.caller_files import OutputMoved
from virnuc.daemon.progress.log import JobRow, NewJob, PartRecord, ProgressLog, UnitPlan
from virnuc.faults import Faults
from virnuc.parts import write_part
from virnuc.pipeline.fasta import read_records, record_starts
from virnuc.pipeline.inputs import read_job_records
from virnuc.pipeline.output_format import RUN_INFO
from virnuc.pipeline.outputs import (
    EMBEDDINGS,
    HIGHEST_SCORE,
    OUTPUT_NAMES,
    PREDICTIONS,
    SUMMARY,
    VIRUS_FASTA,
    OutputExistsError,
    RecordResult,
    ResultWriter,
)
from virnuc.pipeline.spec import ModelSpec

SPEC = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300, "demo")
DIMS = (5, 3)  # nucleotide, protein embedding widths
TEXT_OUTPUTS = (PREDICTIONS, HIGHEST_SCORE, SUMMARY, VIRUS_FASTA)
# Frames per record; zero-frame records keep their place. Units [3, 2, 4] in parts of
# at most 2 records: (unit 0: @0, @2), (unit 1: @3), (unit 2: @5, @7).
FRAMES = [3, 0, 6, 1, 4, 0, 0, 5, 2]
UNITS = [3, 2, 4]
PART_RECORDS = 2


@pytest_asyncio.fixture
async def log(tmp_path: Path) -> AsyncIterator[ProgressLog]:
    async with await ProgressLog.open(tmp_path / "state.db") as opened:
        yield opened


def make_result(rid: str, frames: int, *, seed: int, embeddings: bool) -> RecordResult:
    """A record as the Predictor gives it: frame ids `{rid}_chunk_{n}{F|R}{1..3}`, and
    no embeddings (None) on a record without frames."""
    rng = np.random.default_rng(seed)
    frame_ids = [f"{rid}_chunk_{i // 6 + 1}{'FR'[i % 6 // 3]}{i % 3 + 1}" for i in range(frames)]
    keep = embeddings and frames > 0
    return RecordResult(
        record_id=rid,
        length=150 + 97 * seed,
        chunks=max(1, (frames + 5) // 6),
        frame_ids=frame_ids,
        scores=rng.random((frames, 2), dtype=np.float32),
        nucleotide=rng.random((frames, DIMS[0]), dtype=np.float32) if keep else None,
        protein=rng.random((frames, DIMS[1]), dtype=np.float32) if keep else None,
    )


def sample(*, embeddings: bool = False) -> list[RecordResult]:
    return [make_result(f"seq_{i}", n, seed=i, embeddings=embeddings) for i, n in enumerate(FRAMES)]


def fasta_text(ids: list[str]) -> str:
    return "".join(f">{rid} sample {i}\n{'ACGT' * (10 + i)}\nACG\n" for i, rid in enumerate(ids))


@dataclass
class Job:
    row: JobRow
    input: Path
    out: Path
    parts: list[PartRecord]  # in input order

    def part_at(self, first_record: int) -> PartRecord:
        return next(p for p in self.parts if p.first_record == first_record)


Tamper = Callable[[PartRecord, list[RecordResult]], PartRecord]


async def job_with_parts(
    log: ProgressLog,
    tmp_path: Path,
    results: list[RecordResult],
    *,
    units: list[int] = UNITS,
    part_records: int = PART_RECORDS,
    save_embeddings: bool = False,
    force: bool = False,
    gz: bool = False,
    record_units: list[int] | None = None,
    part_results: Callable[[int, list[RecordResult]], list[RecordResult]] | None = None,
    tamper: Tamper | None = None,
) -> Job:
    """A planned job whose input holds `results`' ids, each unit's parts written with
    `virnuc.parts.write_part` and recorded as the supervisor records an ack.

    Units are recorded in the order `record_units` (default: last unit first, as
    parallel workers may finish); `part_results(first_record, results)` may change
    what a part holds, and `tamper(record, results)` the ack that is recorded."""
    text = fasta_text([r.record_id for r in results]).encode()
    path = tmp_path / ("in.fa.gz" if gz else "in.fa")
    path.write_bytes(gzip.compress(text) if gz else text)
    out = tmp_path / "out"
    parts_dir = tmp_path / "jobs" / "j1" / "parts"
    parts_dir.mkdir(parents=True)
    await log.create_job(
        NewJob("j1", str(path), str(out), SPEC, part_records, save_embeddings, force)
    )
    offsets = [start.offset for start in record_starts(path)] + [len(text)]
    assert len(offsets) == len(results) + 1
    plan, first = [], 0
    for unit_id, count in enumerate(units):
        plan.append(UnitPlan(unit_id, offsets[first], first, count))
        first += count
    await log.add_units("j1", plan)
    await log.finish_planning("j1", first, len(units))

    by_unit: dict[int, list[PartRecord]] = {}
    for unit in plan:
        end = unit.first_record + unit.record_count
        for start in range(unit.first_record, end, part_records):
            stop = min(start + part_records, end)
            held = results[start:stop]
            if part_results is not None:
                held = part_results(start, held)
            written = write_part(
                parts_dir,
                job_id="j1",
                unit_id=unit.unit_id,
                first_record=start,
                end_offset=offsets[stop],
                results=held,
                embedding_dims=DIMS if save_embeddings else None,
            )
            record = PartRecord(
                "j1",
                unit.unit_id,
                start,
                written.record_count,
                written.frames,
                str(written.path),
                written.size,
                written.sha256,
                offsets[stop],
            )
            if tamper is not None:
                record = tamper(record, held)
            by_unit.setdefault(unit.unit_id, []).append(record)
    for unit_id in record_units if record_units is not None else reversed(range(len(units))):
        for record in by_unit[unit_id]:
            assert (await log.record_part(record)).recorded
    row = await log.get_job("j1")
    assert row is not None
    return Job(row, path, out, [p for u in sorted(by_unit) for p in by_unit[u]])


def reference(
    tmp_path: Path,
    results: list[RecordResult],
    *,
    embeddings: bool = False,
    source: str = "in.fa",
) -> Path:
    """What a direct, in-process run writes for the same results (of input `source`)."""
    out = tmp_path / "reference"
    dims = DIMS if embeddings else None
    path = str(tmp_path / source)
    sequences = {record.id: record.sequence for _, record in read_job_records([path])}
    with ResultWriter(
        out, embedding_dims=dims, chunk_length=SPEC.chunk_length, with_sequences=True
    ) as writer:
        for result in results:
            writer.write(result, source=path, sequence=sequences[result.record_id])
        writer.commit()
    return out


def h5_contents(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as h5:
        return {name: h5[name][()] for name in h5}


def assert_same_outputs(out: Path, ref: Path) -> None:
    # run_info.json: predict_file writes it after its outputs; virnucd in its report
    # step, after assembly (tests/daemon/jobs/test_tasks_report.py)
    names = sorted(set(os.listdir(ref)) - {RUN_INFO})
    assert sorted(os.listdir(out)) == names  # and no `.partial` file left beside them
    for name in TEXT_OUTPUTS:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    if EMBEDDINGS in names:
        got, want = h5_contents(out / EMBEDDINGS), h5_contents(ref / EMBEDDINGS)
        assert sorted(got) == sorted(want) == ["ids", "nucleotide", "protein"]
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


def assert_nothing_published(out: Path) -> None:
    """No final name, and no temporary one either (an interrupted assembly cleans up)."""
    left = sorted(os.listdir(out)) if out.exists() else []
    assert left == [], left


class CancelAfterParts(Faults):
    """Sets `cancel` once `parts` parts have been appended (the `mid_assembly` point)."""

    def __init__(self, cancel: threading.Event, parts: int):
        super().__init__()
        self.cancel, self.parts, self.appended = cancel, parts, 0

    def hit(self, point: str) -> None:
        if point == "mid_assembly":
            self.appended += 1
            if self.appended == self.parts:
                self.cancel.set()


async def run_assembly(log: ProgressLog, job: Job, faults: Faults | None = None) -> None:
    await assemble(log, job.row, threading.Event(), faults)


# --- what a good assembly writes ------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "record_units", [[2, 1, 0], [0, 1, 2], [1, 2, 0]], ids=["reversed", "in-order", "mixed"]
)
async def test_outputs_equal_a_direct_write_in_input_order_whatever_the_recording_order(
    log: ProgressLog, tmp_path: Path, record_units: list[int]
) -> None:
    results = sample()
    job = await job_with_parts(log, tmp_path, results, record_units=record_units)
    counted = CancelAfterParts(threading.Event(), parts=99)

    await run_assembly(log, job, counted)

    assert_same_outputs(job.out, reference(tmp_path, results))
    assert counted.appended == len(job.parts) == 5
    assert not (job.out / EMBEDDINGS).exists()
    summary_ids = [line.split("\t")[0] for line in (job.out / SUMMARY).read_text().splitlines()]
    assert summary_ids[1:] == [f"seq_{i}" for i in range(9)]


@pytest.mark.asyncio
async def test_embeddings_are_assembled_row_aligned_even_when_the_first_part_has_no_frames(
    log: ProgressLog, tmp_path: Path
) -> None:
    # Records 0 and 1 have no frames: the first part's arrays are zero rows wide DIMS,
    # and the embeddings file must still get the right widths from it.
    frames = [0, 0, 4, 6, 0, 1]
    results = [make_result(f"c{i}", n, seed=i, embeddings=True) for i, n in enumerate(frames)]
    job = await job_with_parts(
        log, tmp_path, results, units=[2, 4], part_records=2, save_embeddings=True
    )

    await run_assembly(log, job)

    assert_same_outputs(job.out, reference(tmp_path, results, embeddings=True))
    with h5py.File(job.out / EMBEDDINGS, "r") as h5:
        assert h5["nucleotide"].shape == (sum(frames), DIMS[0])
        assert h5["protein"].shape == (sum(frames), DIMS[1])
        ids = [i.decode() for i in h5["ids"][()]]
    predicted = [line.split("\t")[0] for line in (job.out / PREDICTIONS).read_text().splitlines()]
    assert ids == predicted[1:]


@pytest.mark.asyncio
async def test_gzip_input_is_checked_against_its_decompressed_records(
    log: ProgressLog, tmp_path: Path
) -> None:
    results = sample()
    job = await job_with_parts(log, tmp_path, results, gz=True)

    await run_assembly(log, job)

    assert_same_outputs(job.out, reference(tmp_path, results, source="in.fa.gz"))


@pytest.mark.asyncio
async def test_outputs_equal_in_process_prediction_with_the_demo_models(
    log: ProgressLog, tmp_path: Path, demo_models: Any
) -> None:
    """End to end without processes: the Predictor's results, cut into parts by the
    worker's `PartWriter` and recorded from its acks, assemble to exactly what
    `predict_file` writes for the same input."""
    from virnuc.model_wire import spec_to_wire
    from virnuc.pipeline.predict import Predictor
    from virnuc.pipeline.run import predict_file
    from virnuc.protocol import Assign, Checkpoint
    from virnuc.worker.link import Flags
    from virnuc.worker.part_writer import PartJob, PartWriter

    seqs = ["ACGTTGCA" * 40, "AC", "TTGACCA" * 60, "GATTACA" * 50]
    path = tmp_path / "in.fa"
    path.write_text("".join(f">demo{i} x\n{s}\n" for i, s in enumerate(seqs)))
    ref = tmp_path / "reference"
    predict_file(demo_models, path, ref, save_embeddings=True)
    dims = (demo_models.dnabert.dim, demo_models.esm.dim)
    records = list(read_records(path))
    results = list(Predictor(demo_models, keep_embeddings=True).predict(iter(records)))

    out, parts_dir = tmp_path / "out", tmp_path / "parts"
    parts_dir.mkdir()
    await log.create_job(NewJob("j1", str(path), str(out), SPEC, 1, save_embeddings=True))
    plan = [UnitPlan(0, records[0].offset, 0, 3), UnitPlan(1, records[3].offset, 3, 1)]
    await log.add_units("j1", plan)
    await log.finish_planning("j1", 4, 2)

    class Link:
        def __init__(self) -> None:
            self.sent: list[Checkpoint] = []

        def send(self, message: Checkpoint) -> None:
            self.sent.append(message)

    class QuietLog:
        def info(self, *args: object, **kw: object) -> None: ...
        def exception(self, *args: object, **kw: object) -> None: ...

    link = Link()
    writer = PartWriter(link, Flags(), Faults(), QuietLog())
    try:
        for unit in reversed(plan):  # unit 1 is acked first
            assign = Assign(
                job_id="j1",
                unit_id=unit.unit_id,
                input=str(path),
                start_offset=unit.start_offset,
                start_record=unit.first_record,
                record_count=unit.record_count,
                models=spec_to_wire(SPEC),
                save_embeddings=True,
                checkpoint_every=2,
                parts_dir=str(parts_dir),
            )
            end = unit.first_record + unit.record_count
            for start in range(unit.first_record, end, 2):
                stop = min(start + 2, end)
                end_offset = records[stop - 1].end_offset
                writer.submit(PartJob(assign, start, end_offset, results[start:stop], dims))
        writer.drain()
    finally:
        writer.stop()
    assert [(ack.unit_id, ack.first_record) for ack in link.sent] == [(1, 3), (0, 0), (0, 2)]
    for ack in link.sent:
        await log.record_part(PartRecord.from_ack(ack))
    row = await log.get_job("j1")
    assert row is not None

    await assemble(log, row, threading.Event())

    assert_same_outputs(out, ref)
    assert sum(r.frame_ids != [] for r in results) == 3  # "AC" is too short for a frame
    assert len((out / PREDICTIONS).read_text().splitlines()) == 1 + sum(
        len(r.frame_ids) for r in results
    )


# --- a part that fails a check --------------------------------------------------------


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (flip_a_byte, "SHA-256 is [0-9a-f]{64}, expected"),
        (truncate, "size is [0-9]+ bytes, expected"),
        (Path.unlink, "cannot read"),
    ],
    ids=["bytes-changed", "truncated", "missing"],
)
async def test_a_part_damaged_on_disk_needs_recompute_from_its_unit_and_first_record(
    log: ProgressLog, tmp_path: Path, damage: Callable[[Path], None], reason: str
) -> None:
    job = await job_with_parts(log, tmp_path, sample())
    damage(Path(job.part_at(7).path))  # unit 2's second part, after four good ones

    with pytest.raises(PartNeedsRecompute, match=reason) as raised:
        await run_assembly(log, job)

    assert (raised.value.unit_id, raised.value.first_record) == (2, 7)
    assert str(raised.value).startswith("unit 2 part at record 7: ")
    assert_nothing_published(job.out)


def other_job(record: PartRecord, held: list[RecordResult]) -> PartRecord:
    """The row points at a part that another job wrote for the same records."""
    if record.first_record != 3:
        return record
    elsewhere = Path(record.path).parent.parent / "other"
    elsewhere.mkdir()
    written = write_part(
        elsewhere,
        job_id="j0",
        unit_id=record.unit_id,
        first_record=record.first_record,
        end_offset=record.end_offset,
        results=held,
    )
    return replace(record, path=str(written.path), size=written.size, sha256=written.sha256)


def more_frames(record: PartRecord, held: list[RecordResult]) -> PartRecord:
    return replace(record, frames=record.frames + 1) if record.first_record == 3 else record


@pytest.mark.asyncio
@pytest.mark.parametrize("tamper", [other_job, more_frames], ids=["other-job", "frames"])
async def test_a_part_whose_header_disagrees_with_its_row_needs_recompute(
    log: ProgressLog, tmp_path: Path, tamper: Tamper
) -> None:
    job = await job_with_parts(log, tmp_path, sample(), tamper=tamper)

    with pytest.raises(
        PartNeedsRecompute, match=r"its header .* does not match its record"
    ) as raised:
        await run_assembly(log, job)

    assert (raised.value.unit_id, raised.value.first_record) == (1, 3)
    assert_nothing_published(job.out)


@pytest.mark.asyncio
async def test_a_part_holding_other_ids_than_the_input_needs_recompute(
    log: ProgressLog, tmp_path: Path
) -> None:
    """The input was edited after its parts were computed: ids are read afresh."""
    job = await job_with_parts(log, tmp_path, sample())
    ids = [f"seq_{i}" for i in range(9)]
    ids[4] = "renamed_4"  # record 4 sits in unit 1's only part, records 3 and 4
    job.input.write_text(fasta_text(ids))

    with pytest.raises(PartNeedsRecompute) as raised:
        await run_assembly(log, job)

    assert (raised.value.unit_id, raised.value.first_record) == (1, 3)
    assert "holds record 'seq_4' where the input has record 'renamed_4'" in raised.value.reason
    assert_nothing_published(job.out)


@pytest.mark.asyncio
async def test_a_part_past_the_end_of_a_shortened_input_needs_recompute(
    log: ProgressLog, tmp_path: Path
) -> None:
    job = await job_with_parts(log, tmp_path, sample())
    job.input.write_text(fasta_text([f"seq_{i}" for i in range(8)]))  # seq_8 removed

    with pytest.raises(PartNeedsRecompute, match="where the input has the end of the input") as e:
        await run_assembly(log, job)

    assert (e.value.unit_id, e.value.first_record) == (2, 7)
    assert_nothing_published(job.out)


@pytest.mark.asyncio
async def test_frames_that_belong_to_another_record_need_recompute(
    log: ProgressLog, tmp_path: Path
) -> None:
    def swap_frames(first: int, held: list[RecordResult]) -> list[RecordResult]:
        if first != 5:
            return held
        # The part of records 5 and 6: seq_6 (no frames of its own) gets one of seq_0's.
        thief = replace(held[1], frame_ids=["seq_0_chunk_1F1"], scores=np.ones((1, 2), "f4"))
        return [held[0], thief]

    job = await job_with_parts(log, tmp_path, sample(), part_results=swap_frames)

    with pytest.raises(PartNeedsRecompute, match="record 'seq_6' has foreign frame ids") as e:
        await run_assembly(log, job)

    assert (e.value.unit_id, e.value.first_record) == (2, 5)
    assert_nothing_published(job.out)


@pytest.mark.asyncio
async def test_a_unit_without_parts_is_a_gap_named_at_the_next_part(
    log: ProgressLog, tmp_path: Path
) -> None:
    job = await job_with_parts(log, tmp_path, sample(), record_units=[0, 2])  # unit 1: none

    with pytest.raises(PartNeedsRecompute, match="parts do not tile the input") as raised:
        await run_assembly(log, job)

    assert (raised.value.unit_id, raised.value.first_record) == (2, 5)
    assert "starts at record 5, expected 3" in raised.value.reason
    assert_nothing_published(job.out)


@pytest.mark.asyncio
async def test_recomputing_the_named_part_and_the_rest_of_its_unit_then_assembles(
    log: ProgressLog, tmp_path: Path
) -> None:
    """What the scheduler does with `PartNeedsRecompute`: delete from the named record
    on, compute those records again, assemble again."""
    results = sample()
    job = await job_with_parts(log, tmp_path, results)
    flip_a_byte(Path(job.part_at(5).path))
    with pytest.raises(PartNeedsRecompute) as raised:
        await run_assembly(log, job)

    deleted, _ = await log.delete_parts("j1", raised.value.unit_id, raised.value.first_record)
    assert [p.first_record for p in deleted] == [5, 7]
    for part in deleted:
        redone = write_part(
            Path(part.path).parent,
            job_id="j1",
            unit_id=part.unit_id,
            first_record=part.first_record,
            end_offset=part.end_offset,
            results=results[part.first_record : part.first_record + part.record_count],
        )
        await log.record_part(replace(part, size=redone.size, sha256=redone.sha256))
    await run_assembly(log, job)

    assert_same_outputs(job.out, reference(tmp_path, results))


# --- the whole input, or nothing ------------------------------------------------------


@pytest.mark.asyncio
async def test_parts_that_stop_short_of_the_planned_records_publish_nothing(
    log: ProgressLog, tmp_path: Path
) -> None:
    job = await job_with_parts(log, tmp_path, sample(), record_units=[0, 1])  # unit 2: none

    with pytest.raises(RuntimeError, match="parts cover 5 of 9 records"):
        await run_assembly(log, job)

    assert_nothing_published(job.out)


@pytest.mark.asyncio
async def test_an_input_with_more_records_than_planned_publishes_nothing(
    log: ProgressLog, tmp_path: Path
) -> None:
    job = await job_with_parts(log, tmp_path, sample())
    with job.input.open("a") as handle:
        handle.write(">appended later\nACGT\n")

    with pytest.raises(RuntimeError, match="more records than were planned"):
        await run_assembly(log, job)

    assert_nothing_published(job.out)


@pytest.mark.asyncio
async def test_a_job_saving_embeddings_whose_parts_hold_none_fails(
    log: ProgressLog, tmp_path: Path
) -> None:
    job = await job_with_parts(log, tmp_path, sample())
    row = replace(job.row, save_embeddings=True)

    with pytest.raises(RuntimeError, match="parts hold none"):
        await assemble(log, row, threading.Event())

    assert_nothing_published(job.out)


# --- cancel ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cancel_before_assembly_raises_and_writes_nothing(
    log: ProgressLog, tmp_path: Path
) -> None:
    job = await job_with_parts(log, tmp_path, sample())
    cancel = threading.Event()
    cancel.set()

    with pytest.raises(AssemblyCancelled):
        await assemble(log, job.row, cancel)

    assert_nothing_published(job.out)


@pytest.mark.asyncio
async def test_cancel_between_parts_raises_and_removes_the_partial_outputs(
    log: ProgressLog, tmp_path: Path
) -> None:
    job = await job_with_parts(log, tmp_path, sample(embeddings=True), save_embeddings=True)
    cancel = threading.Event()
    faults = CancelAfterParts(cancel, parts=2)

    with pytest.raises(AssemblyCancelled):
        await assemble(log, job.row, cancel, faults)

    assert faults.appended == 2  # the third part was never appended
    assert_nothing_published(job.out)


# --- publishing beside earlier files --------------------------------------------------


@pytest.mark.asyncio
async def test_reassembly_after_an_interrupted_publish_completes_it(
    log: ProgressLog, tmp_path: Path
) -> None:
    """A crash between the renames left our files but not prediction_results.txt (it
    goes last): assembling again publishes the set, no force needed."""
    results = sample()
    job = await job_with_parts(log, tmp_path, results)
    await run_assembly(log, job)
    (job.out / PREDICTIONS).unlink()

    await run_assembly(log, job)

    assert_same_outputs(job.out, reference(tmp_path, results))


@pytest.mark.asyncio
async def test_a_file_someone_else_wrote_meanwhile_is_kept_unless_the_job_forces(
    log: ProgressLog, tmp_path: Path
) -> None:
    results = sample()
    job = await job_with_parts(log, tmp_path, results)
    job.out.mkdir()
    (job.out / SUMMARY).write_text("not ours\n")

    with pytest.raises(OutputExistsError, match=re.escape(SUMMARY)):
        await run_assembly(log, job)

    assert (job.out / SUMMARY).read_text() == "not ours\n"
    assert not (job.out / PREDICTIONS).exists()
    assert sorted(os.listdir(job.out)) == [SUMMARY]

    await assemble(log, replace(job.row, force=True), threading.Event())
    assert_same_outputs(job.out, reference(tmp_path, results))
    assert set(os.listdir(job.out)) == set(OUTPUT_NAMES) - {EMBEDDINGS}


@pytest.mark.asyncio
async def test_a_task_cancelled_while_its_first_part_is_read_leaves_no_partial_files(
    log: ProgressLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from virnuc.daemon.jobs import assembler

    job = await job_with_parts(log, tmp_path, sample())
    entered, release, appended = threading.Event(), threading.Event(), threading.Event()
    real_read_part = assembler.read_part
    writers: list[ResultWriter] = []

    def slow_read_part(*args: Any, **kw: Any) -> Any:
        entered.set()  # the part's SHA-256 is being checked (a big part takes seconds)
        release.wait(10)
        return real_read_part(*args, **kw)

    class TrackedWriter(ResultWriter):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            writers.append(self)

    class Appended(Faults):
        def hit(self, point: str) -> None:
            appended.set()

    monkeypatch.setattr(assembler, "read_part", slow_read_part)
    monkeypatch.setattr(assembler, "ResultWriter", TrackedWriter)
    cancel = threading.Event()
    task = asyncio.create_task(assemble(log, job.row, cancel, Appended()))
    try:
        assert await asyncio.to_thread(entered.wait, 10)
        cancel.set()  # as JobRun.stop_task: the event, then the task
        task.cancel()
        release.set()  # the part's check ends after the cancel
        with pytest.raises(asyncio.CancelledError):
            await task
        assert appended.is_set()  # the thread did go on to open and fill the outputs
        assert_nothing_published(job.out)
    finally:
        release.set()
        for writer in writers:
            writer.abort()  # close what the stray thread opened


# --- the output directory opened at submit ----------------------------------------------


def opened_at_submit(job: Job) -> JobRow:
    """The job's row as a submit that opened (made) its output directory records it."""
    job.out.mkdir()
    st = job.out.stat()
    return replace(job.row, output_identity=f"{st.st_dev}:{st.st_ino}", owner="uid:0")


@pytest.mark.asyncio
async def test_outputs_are_written_into_the_directory_opened_at_submit(
    log: ProgressLog, tmp_path: Path
) -> None:
    results = sample(embeddings=True)
    job = await job_with_parts(log, tmp_path, results, save_embeddings=True)
    await assemble(log, opened_at_submit(job), threading.Event())
    assert_same_outputs(job.out, reference(tmp_path, results, embeddings=True))


@pytest.mark.asyncio
async def test_an_output_directory_swapped_for_a_symlink_fails_writing_nothing_there(
    log: ProgressLog, tmp_path: Path
) -> None:
    job = await job_with_parts(log, tmp_path, sample())
    row = opened_at_submit(job)
    elsewhere = tmp_path / "state-like"
    elsewhere.mkdir()
    job.out.rename(tmp_path / "moved")
    job.out.symlink_to(elsewhere)
    with pytest.raises(OutputMoved) as refused:
        await assemble(log, row, threading.Event())
    assert str(refused.value) == (
        f"output {job.out}: no longer the directory submitted (replaced or moved since); "
        "nothing was written"
    )
    assert os.listdir(elsewhere) == []
    assert os.listdir(tmp_path / "moved") == []


@pytest.mark.asyncio
async def test_a_foreign_file_is_named_by_the_users_path_not_the_opened_one(
    log: ProgressLog, tmp_path: Path
) -> None:
    job = await job_with_parts(log, tmp_path, sample())
    row = opened_at_submit(job)
    (job.out / PREDICTIONS).write_text("someone else's\n")
    with pytest.raises(OutputExistsError) as refused:
        await assemble(log, row, threading.Event())
    assert str(refused.value).startswith(f"{job.out} now holds {PREDICTIONS}")
    assert "/proc/self/fd" not in str(refused.value)
