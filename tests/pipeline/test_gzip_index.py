"""Seek-point indexes of gzip inputs: a unit late in a `.gz` is read from the nearest
seek point, not from byte 0; an index that is missing or not what was recorded is
never used, and the unit still reads the same records and digest."""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from virnuc.daemon.jobs.planner import unit_spans
from virnuc.input_digest import digest_of_range
from virnuc.pipeline import gzip_index, gzip_pass
from virnuc.pipeline.gzip_index import GzipIndex
from virnuc.pipeline.inputs import read_records

READS = 120_000
UNIT = 1_000
SPACING = 1 << 18  # decompressed bytes between the seek points kept in these tests


def random_fastq_gz(path: Path, reads: int) -> Path:
    """FASTQ of random bases and qualities (so that it compresses little), gzipped."""
    bases = bytes.maketrans(bytes(range(256)), b"ACGT" * 64)
    quals = bytes.maketrans(bytes(range(256)), bytes(33 + i % 40 for i in range(256)))
    with gzip.open(path, "wb", compresslevel=1) as out:
        for i in range(reads):
            noise = os.urandom(300)
            out.write(
                b"@r%d\n%s\n+\n%s\n"
                % (i, noise[:150].translate(bases), noise[150:].translate(quals))
            )
    return path


class CountingFile(io.RawIOBase):
    """A compressed file that counts the bytes read from it."""

    total = 0

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        got = self._file.readinto(buffer)
        CountingFile.total += got
        return got

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


@pytest.fixture(scope="module")
def fastq_gz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_fastq_gz(tmp_path_factory.mktemp("gz") / "reads.fq.gz", READS)


@pytest.fixture
def planned(
    fastq_gz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[list[tuple[int, int, int, str]], GzipIndex]]:
    """The input's units as the planner cuts them, and the index it saved meanwhile."""
    monkeypatch.setattr(gzip_pass, "MIN_SPACING", SPACING)
    index_path = tmp_path / "input-0.gzidx"
    spans = list(unit_spans(fastq_gz, UNIT, index_path))
    index = gzip_index.describe(index_path)
    assert index is not None
    yield spans, index
    gzip_index.use(str(fastq_gz), None)  # forget it: the next test starts bare


def read_unit(path: Path, span: tuple[int, int, int, str]) -> tuple[list[str], str]:
    """The unit's record ids and the digest of its bytes, as a worker reads them."""
    first, start, end, _ = span
    ids = [r.id for r in read_records(path, offset=start, first_index=first, count=UNIT)]
    return ids, digest_of_range(path, start, end)


def count_compressed_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    CountingFile.total = 0
    monkeypatch.setattr(gzip_index, "_open_compressed", lambda path: CountingFile(path))


def test_a_late_unit_is_read_from_its_nearest_seek_point_not_from_the_start(
    fastq_gz: Path,
    planned: tuple[list[tuple[int, int, int, str]], GzipIndex],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans, index = planned
    assert gzip_index.use(str(fastq_gz), index)
    count_compressed_reads(monkeypatch)

    ids, digest = read_unit(fastq_gz, spans[-2])

    first = spans[-2][0]
    assert ids == [f"r{i}" for i in range(first, first + UNIT)]
    assert digest == spans[-2][3]
    compressed = fastq_gz.stat().st_size
    assert 0 < CountingFile.total < compressed / 4, (CountingFile.total, compressed)  # from 0: all


@pytest.mark.parametrize("damage", ["overwritten", "truncated", "missing"])
def test_an_index_not_as_recorded_is_never_trusted_but_rebuilt_and_late_units_still_seek(
    fastq_gz: Path,
    planned: tuple[list[tuple[int, int, int, str]], GzipIndex],
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
) -> None:
    spans, index = planned
    saved = Path(index.path)
    if damage == "overwritten":  # same size, other bytes: only the digest tells
        with saved.open("r+b") as out:
            out.seek(index.size // 2)
            out.write(b"\xff" * 64)
    elif damage == "truncated":
        os.truncate(saved, index.size - 100)
    else:
        saved.unlink()
    damaged = saved.read_bytes() if saved.exists() else None

    with structlog.testing.capture_logs() as logs:
        assert gzip_index.use(str(fastq_gz), index)
    count_compressed_reads(monkeypatch)
    ids, digest = read_unit(fastq_gz, spans[-1])

    reasons = {"overwritten": "SHA-256", "truncated": "size", "missing": "cannot read"}
    events = {e["event"]: e for e in logs}
    assert reasons[damage] in events["gzip_index.unusable"]["reason"]
    assert events["gzip_index.unusable"]["index"] == index.path
    assert "gzip_index.rebuilt" in events
    first = spans[-1][0]
    assert ids == [f"r{i}" for i in range(first, READS)]
    assert digest == spans[-1][3]
    compressed = fastq_gz.stat().st_size
    assert 0 < CountingFile.total < compressed / 4  # the rebuilt index: no read from 0
    assert (saved.read_bytes() if saved.exists() else None) == damaged  # never written to


def test_an_index_of_an_input_that_cannot_be_read_is_not_rebuilt(
    fastq_gz: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.fq.gz"
    cut.write_bytes(fastq_gz.read_bytes()[:1000])
    index = GzipIndex(str(tmp_path / "absent.gzidx"), 10, "0" * 64)

    with structlog.testing.capture_logs() as logs:
        used = gzip_index.use(str(tmp_path / "gone.fq.gz"), index)

    assert not used
    assert [e["event"] for e in logs] == ["gzip_index.unusable", "gzip_index.not_rebuilt"]


def test_an_index_verified_once_is_kept_while_it_is_the_one_named(
    fastq_gz: Path, planned: tuple[list[tuple[int, int, int, str]], GzipIndex]
) -> None:
    _, index = planned
    assert gzip_index.use(str(fastq_gz), index)
    Path(index.path).unlink()  # its bytes were read when verified: what is used is them
    assert gzip_index.use(str(fastq_gz), index)
    other = GzipIndex(index.path, index.size, "0" * 64)
    with structlog.testing.capture_logs() as logs:
        assert gzip_index.use(str(fastq_gz), other)  # not the kept one: checked, rebuilt
    assert [e["event"] for e in logs] == ["gzip_index.unusable", "gzip_index.rebuilt"]


def test_the_saved_index_is_described_by_its_size_and_sha256(
    planned: tuple[list[tuple[int, int, int, str]], GzipIndex],
) -> None:
    _, index = planned
    data = Path(index.path).read_bytes()
    assert index.size == len(data) > 0
    assert gzip_index.loads(gzip_index.dumps([index, None])) == (index, None)
    leftovers = [p.name for p in Path(index.path).parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # written under a temporary name, renamed into place


def test_an_index_that_cannot_be_saved_is_left_out_and_the_plan_goes_on(
    fastq_gz: Path, tmp_path: Path
) -> None:
    nowhere = tmp_path / "gone" / "input-0.gzidx"  # its directory does not exist

    with structlog.testing.capture_logs() as logs:
        spans = list(unit_spans(fastq_gz, 20_000, nowhere))

    assert len(spans) == READS // 20_000
    assert gzip_index.describe(nowhere) is None
    assert [e["event"] for e in logs] == ["gzip_index.not_saved"]


def test_a_plain_input_reads_as_before(tmp_path: Path) -> None:
    path = tmp_path / "in.fq"
    path.write_bytes(b"@a\nACGT\n+\nIIII\n@b\nGGCC\n+\nIIII\n")
    assert not gzip_index.is_gzip(path)
    assert [r.id for r in read_records(path, offset=15, first_index=1)] == ["b"]


def test_spacing_grows_with_the_file_within_bounds() -> None:
    assert gzip_pass.spacing_for(1 << 20) == gzip_pass.MIN_SPACING
    lane = 1 << 30  # a 1 GiB .gz: about MAX_POINTS points
    assert lane * 4 // gzip_pass.spacing_for(lane) == gzip_pass.MAX_POINTS
    big = 40 << 30  # 40 GiB: no wider than MAX_SPACING (zran's buffers are 4 spacings)
    assert gzip_pass.spacing_for(big) == gzip_pass.MAX_SPACING
