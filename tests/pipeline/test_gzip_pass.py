"""Planning's one read of a gzip input: fast, yet every damage the standard
library's reader finds is found, with its line; a sound file is not read a second
time to check it; several members are read and indexed too; the indexer stops with a
failed scan; a crafted file is read in bounded pieces."""

from __future__ import annotations

import gzip
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest

from virnuc.pipeline import gzip_index, gzip_pass
from virnuc.pipeline.gzip_index import GzipIndex
from virnuc.pipeline.input_error import FastaError
from virnuc.pipeline.inputs import input_pass, read_records

READS = 20_000


def fastq_text(first: int, count: int) -> bytes:
    return b"".join(
        b"@r%d\n%s\n+\n%s\n" % (i, b"ACGT" * 20, b"I" * 80) for i in range(first, first + count)
    )


def scan_with_index(path: Path, index_to: Path) -> int:
    run = input_pass(path, index_to)
    for _ in run:
        pass
    assert run.scan is not None
    return run.scan.records


def lines_before_the_damage(blob: bytes) -> int:
    """The line the standard library's reader stops at, as the old scan reported it."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(blob)
    except zlib.error:
        return -1
    return data.count(b"\n") + 1


@pytest.fixture
def no_second_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: object) -> None:
        raise AssertionError("a sound file was read again to check it")

    monkeypatch.setattr(gzip_pass, "verify", refuse)


@pytest.mark.usefixtures("no_second_read")
def test_a_sound_file_is_indexed_without_a_checking_re_read(tmp_path: Path) -> None:
    path = tmp_path / "in.fq.gz"
    path.write_bytes(gzip.compress(fastq_text(0, READS)))

    assert scan_with_index(path, tmp_path / "input-0.gzidx") == READS
    assert (tmp_path / "input-0.gzidx").stat().st_size > 0


def test_concatenated_members_are_checked_read_and_indexed(tmp_path: Path) -> None:
    path = tmp_path / "in.fq.gz"
    half = READS // 2
    path.write_bytes(gzip.compress(fastq_text(0, half)) + gzip.compress(fastq_text(half, half)))
    index_path = tmp_path / "input-0.gzidx"

    assert scan_with_index(path, index_path) == READS

    described = gzip_index.describe(index_path)
    assert isinstance(described, GzipIndex)
    assert gzip_index.use(str(path), described)
    late = len(fastq_text(0, READS - 3))
    ids = [r.id for r in read_records(path, offset=late, first_index=READS - 3)]
    gzip_index.use(str(path), None)
    assert ids == [f"r{i}" for i in range(READS - 3, READS)]


def _damaged(blob: bytes, how: str) -> bytes:
    middle = len(blob) // 2
    if how == "cut in the middle":
        return blob[:middle]
    if how == "cut in the footer":
        return blob[:-3]
    if how == "footer CRC changed":
        return blob[:-8] + bytes([blob[-8] ^ 1]) + blob[-7:]
    if how == "footer length changed":
        return blob[:-4] + bytes([blob[-4] ^ 1]) + blob[-3:]
    if how == "second member cut":
        return blob + blob[:middle]
    return blob[:middle] + bytes([blob[middle] ^ 0x10]) + blob[middle + 1 :]  # a bit flipped


@pytest.mark.parametrize(
    "how",
    [
        "cut in the middle",
        "cut in the footer",
        "footer CRC changed",
        "footer length changed",
        "second member cut",
        "bit flipped",
    ],
)
def test_a_damaged_stream_fails_the_pass_naming_the_damage_and_its_line(
    tmp_path: Path, how: str
) -> None:
    blob = _damaged(gzip.compress(fastq_text(0, READS)), how)
    path = tmp_path / "in.fq.gz"
    path.write_bytes(blob)

    with pytest.raises(FastaError, match="ends early or is damaged") as raised:
        scan_with_index(path, tmp_path / "input-0.gzidx")

    if how == "cut in the middle":
        assert raised.value.line == lines_before_the_damage(blob)
    assert not (tmp_path / "input-0.gzidx").exists()  # nothing saved for a damaged input


def test_verify_counts_the_lines_before_a_cut(tmp_path: Path) -> None:
    blob = gzip.compress(fastq_text(0, READS))[:30_000]
    path = tmp_path / "cut.gz"
    path.write_bytes(blob)

    with pytest.raises(FastaError) as raised:
        gzip_pass.verify(path)

    assert raised.value.line == lines_before_the_damage(blob) > 1


def test_a_failed_scan_stops_the_indexer_before_checking_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The indexer, held at its second step until it is closed, stops there: it is
    closed when the scan fails, before the checking re-read, not left to inflate the
    rest of the file."""
    events: list[str] = []
    closing = threading.Event()
    recorders: list[gzip_pass.SeekPointRecorder] = []
    original_init, original_close = (
        gzip_pass.SeekPointRecorder.__init__,
        gzip_pass.SeekPointRecorder.close,
    )
    original_verify = gzip_pass.verify

    class HeldAtSecondStep:
        def __init__(self, file: Any) -> None:
            self.file, self.steps = file, 0

        def seek(self, offset: int) -> int:
            self.steps += 1
            if self.steps == 2:
                assert closing.wait(timeout=30), "the indexer was never closed"
            return int(self.file.seek(offset))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.file, name)

    def init(self: gzip_pass.SeekPointRecorder, path: Path) -> None:
        original_init(self, path)
        self._file = HeldAtSecondStep(self._file)
        recorders.append(self)

    def close(self: gzip_pass.SeekPointRecorder) -> None:
        events.append("indexer closed")
        closing.set()
        original_close(self)

    def verify(path: Path) -> None:
        events.append("stream checked")
        original_verify(path)

    monkeypatch.setattr(gzip_pass.SeekPointRecorder, "__init__", init)
    monkeypatch.setattr(gzip_pass.SeekPointRecorder, "close", close)
    monkeypatch.setattr(gzip_pass, "verify", verify)
    monkeypatch.setattr(gzip_pass, "MIN_SPACING", 1 << 16)
    monkeypatch.setattr(gzip_pass, "_SEEK_STEP", 1)
    text = b"@r0\nACGT\n+\nIII\n" + fastq_text(1, READS)  # line 4 is wrong
    path = tmp_path / "in.fq.gz"
    path.write_bytes(gzip.compress(text))

    with pytest.raises(FastaError, match="line 4"):
        scan_with_index(path, tmp_path / "input-0.gzidx")

    assert events == ["indexer closed", "stream checked"]
    (recorder,) = recorders
    assert 0 < recorder.stopped_at < len(text)
    assert not (tmp_path / "input-0.gzidx").exists()


@pytest.mark.parametrize("members", [1, 3])
def test_a_highly_compressed_file_is_read_in_bounded_pieces(tmp_path: Path, members: int) -> None:
    """Zeros deflate some 1000:1: each read stays near the asked size whatever one
    compressed piece holds, and every byte comes out, member after member."""
    member = bytes(8 << 20)
    path = tmp_path / "zeros.gz"
    path.write_bytes(b"".join(gzip.compress(member) for _ in range(members)))
    size = 1 << 16

    with gzip_pass.GzipPass(path, size) as source:
        reads = list(iter(source.read, b""))

    assert max(len(r) for r in reads) < 2 * size
    assert sum(len(r) for r in reads) == members * len(member)
