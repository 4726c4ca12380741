"""Checkpoint parts: exact round trips, durable writes, and refusal of anything doubtful."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from virnuc.parts import (
    PartCorrupt,
    file_sha256,
    part_path,
    read_part,
    temp_path,
    write_part,
)
from virnuc.pipeline.outputs import RecordResult

NUC, PROT = 6, 4


def result(rid: str, frames: int, *, embeddings: bool, seed: int = 0) -> RecordResult:
    """A record with `frames` rows; zero-frame records look as the Predictor makes them."""
    rng = np.random.default_rng(seed)
    scores = rng.random((frames, 2), dtype=np.float32)
    keep = embeddings and frames > 0  # the Predictor leaves None on a record without frames
    return RecordResult(
        record_id=rid,
        length=300 + frames,
        chunks=max(1, frames // 3),
        frame_ids=[f"{rid}_chunk_{i // 6 + 1}F{i % 3 + 1}" for i in range(frames)],
        scores=scores,
        nucleotide=rng.random((frames, NUC), dtype=np.float32) if keep else None,
        protein=rng.random((frames, PROT), dtype=np.float32) if keep else None,
    )


def sample(embeddings: bool) -> list[RecordResult]:
    return [
        result("contig_1", 5, embeddings=embeddings, seed=1),
        result("zero_frames", 0, embeddings=embeddings),
        result("contig_ü_3", 7, embeddings=embeddings, seed=3),  # ids are unicode, not bytes
    ]


def write(tmp_path: Path, results: list[RecordResult], **kw: object):
    args: dict = dict(job_id="j1", unit_id=3, first_record=12000, end_offset=98765)
    args.update(kw)
    return write_part(tmp_path, results=results, **args)


def assert_same(got: list[RecordResult], expected: list[RecordResult]) -> None:
    assert [r.record_id for r in got] == [r.record_id for r in expected]
    for g, e in zip(got, expected, strict=True):
        assert (g.length, g.chunks, g.frame_ids) == (e.length, e.chunks, e.frame_ids)
        assert g.scores.dtype == np.float32
        assert g.scores.shape == (len(e.frame_ids), 2)
        np.testing.assert_array_equal(g.scores, e.scores)
        for name in ("nucleotide", "protein"):
            g_rows, e_rows = getattr(g, name), getattr(e, name)
            if e_rows is None and e.frame_ids:
                assert g_rows is None
            elif e_rows is not None:
                np.testing.assert_array_equal(g_rows, e_rows)
            else:  # a zero-frame record: None in, zero rows (or None) out
                assert g_rows is None or len(g_rows) == 0


def test_part_path_is_deterministic(tmp_path: Path) -> None:
    assert part_path(tmp_path, 3, 12000) == tmp_path / "u000003-r0000012000.npz"


@pytest.mark.parametrize("embeddings", [False, True])
def test_round_trip(tmp_path: Path, embeddings: bool) -> None:
    results = sample(embeddings)
    part = write(tmp_path, results)
    assert part.path == part_path(tmp_path, 3, 12000)
    assert (part.frames, part.record_count) == (12, 3)
    assert part.size == part.path.stat().st_size
    assert part.sha256 == hashlib.sha256(part.path.read_bytes()).hexdigest()
    assert file_sha256(part.path) == part.sha256

    contents = read_part(part.path, size=part.size, sha256=part.sha256)
    assert (contents.job_id, contents.unit_id, contents.first_record) == ("j1", 3, 12000)
    assert (contents.record_count, contents.end_offset, contents.frames) == (3, 98765, 12)
    assert_same(list(contents.results()), results)
    assert ("nucleotide" in contents.arrays) is embeddings


@pytest.mark.parametrize("embeddings", [False, True])
def test_a_part_without_any_frames_round_trips(tmp_path: Path, embeddings: bool) -> None:
    results = [result("a", 0, embeddings=embeddings), result("b", 0, embeddings=embeddings)]
    part = write(tmp_path, results)
    contents = read_part(part.path)
    assert contents.frames == 0
    assert contents.arrays["scores"].shape == (0, 2)
    assert_same(list(contents.results()), results)


def test_embedding_dims_are_kept_without_frames(tmp_path: Path) -> None:
    """A job saving embeddings says so in every part, even one without any frame."""
    part = write(tmp_path, [result("a", 0, embeddings=True)], embedding_dims=(NUC, PROT))
    contents = read_part(part.path)
    assert contents.arrays["nucleotide"].shape == (0, NUC)
    assert contents.arrays["protein"].shape == (0, PROT)
    (only,) = contents.results()
    assert only.nucleotide is not None
    assert only.nucleotide.shape == (0, NUC)
    with pytest.raises(ValueError, match=r"protein must be \[frames, 5\]"):
        write(tmp_path, sample(True), embedding_dims=(NUC, 5))


def test_only_plain_arrays_are_stored(tmp_path: Path) -> None:
    part = write(tmp_path, sample(True))
    with np.load(part.path, allow_pickle=False) as npz:
        kinds = {name: npz[name].dtype.kind for name in npz.files}
    assert kinds["record_ids"] == kinds["frame_ids"] == "U"
    assert "O" not in kinds.values()


def test_temp_file_is_never_under_the_final_name(tmp_path: Path) -> None:
    seen: list[str] = []

    def fault(point: str) -> None:
        final = part_path(tmp_path, 3, 12000)
        if point == "before_rename":
            assert not final.exists()
            assert temp_path(final).stat().st_size > 0
        else:
            assert final.exists()
            assert not temp_path(final).exists()
        seen.append(point)

    write(tmp_path, sample(False), fault=fault)
    assert seen == ["before_rename", "after_rename"]
    assert [p.name for p in tmp_path.iterdir()] == ["u000003-r0000012000.npz"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def fault(point: str) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write(tmp_path, sample(False), fault=fault)
    assert list(tmp_path.iterdir()) == []


def test_rewriting_a_part_replaces_it(tmp_path: Path) -> None:
    first = write(tmp_path, sample(False))
    second = write(tmp_path, sample(True))
    assert first.path == second.path
    assert first.sha256 != second.sha256
    assert read_part(second.path, sha256=second.sha256).record_count == 3


def test_refuses_to_write_what_it_could_not_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one record"):
        write(tmp_path, [])
    half = [result("a", 2, embeddings=True), result("b", 2, embeddings=False)]
    with pytest.raises(ValueError, match="embeddings were not kept for record"):
        write(tmp_path, half)
    assert list(tmp_path.iterdir()) == []


# --- corruption -------------------------------------------------------------------------


@pytest.fixture
def part(tmp_path: Path):
    return write(tmp_path, sample(True))


def test_wrong_size_or_sha_is_refused_before_parsing(part) -> None:
    with pytest.raises(PartCorrupt, match="size is"):
        read_part(part.path, size=part.size + 1)
    with pytest.raises(PartCorrupt, match="SHA-256 is") as info:
        read_part(part.path, sha256="0" * 64)
    assert info.value.path == part.path


def test_truncated_part(part) -> None:
    data = part.path.read_bytes()
    for keep in (0, 10, len(data) // 2, len(data) - 1):
        part.path.write_bytes(data[:keep])
        with pytest.raises(PartCorrupt):
            read_part(part.path)
        with pytest.raises(PartCorrupt, match="size is"):
            read_part(part.path, size=part.size, sha256=part.sha256)


def test_flipped_byte(part) -> None:
    data = bytearray(part.path.read_bytes())
    data[len(data) // 3] ^= 0x01
    part.path.write_bytes(bytes(data))
    with pytest.raises(PartCorrupt, match="SHA-256"):
        read_part(part.path, size=part.size, sha256=part.sha256)
    with pytest.raises(PartCorrupt):  # even unhashed: the zip CRC catches it
        read_part(part.path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PartCorrupt, match="cannot read"):
        read_part(tmp_path / "nope.npz", size=1)
    with pytest.raises(PartCorrupt, match="unreadable"):
        read_part(tmp_path / "nope.npz")


def _rewrite(path: Path, **changes: np.ndarray | None) -> None:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    for name, value in changes.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


def test_an_object_array_is_refused_not_unpickled(part) -> None:
    _rewrite(part.path, frame_ids=np.array([object()] * 12, dtype=object))
    with pytest.raises(PartCorrupt, match="unreadable"):
        read_part(part.path)


BAD_ARRAYS = {
    "counts do not add up": (
        {"record_frames": np.array([5, 0, 6], dtype=np.int64)},
        "record_frames add up to 11",
    ),
    "too few scores": ({"scores": np.zeros((11, 2), np.float32)}, "scores is float32"),
    "scores of the wrong type": ({"scores": np.zeros((12, 2), np.float64)}, "scores is float64"),
    "one embedding only": ({"protein": None}, "only nucleotide embeddings"),
    "embedding rows": ({"protein": np.zeros((3, PROT), np.float32)}, "protein is float32"),
    "missing lengths": ({"record_lengths": None}, "record_lengths is missing"),
    "ids as bytes": ({"record_ids": np.array([b"a", b"b", b"c"])}, "record_ids is"),
    "no meta": ({"meta": None}, "no meta array"),
    "meta not JSON": ({"meta": np.frombuffer(b"{", np.uint8)}, "meta is not JSON"),
    "other format": ({"meta": np.frombuffer(b'{"format": 9}', np.uint8)}, "unknown part format"),
    "meta fields": (
        {"meta": np.frombuffer(b'{"format": 1, "job_id": "", "unit_id": -1}', np.uint8)},
        "job_id, unit_id, first_record",
    ),
}


@pytest.mark.parametrize(("changes", "reason"), BAD_ARRAYS.values(), ids=BAD_ARRAYS.keys())
def test_inconsistent_arrays_are_refused(part, changes: dict, reason: str) -> None:
    _rewrite(part.path, **changes)
    with pytest.raises(PartCorrupt, match=reason):
        read_part(part.path)


def test_meta_must_agree_with_the_arrays(tmp_path: Path, part) -> None:
    with np.load(part.path, allow_pickle=False) as npz:
        meta = npz["meta"].tobytes().replace(b'"frames": 12', b'"frames": 13')
    _rewrite(part.path, meta=np.frombuffer(meta, np.uint8))
    with pytest.raises(PartCorrupt, match="meta says 3 records and 13 frames"):
        read_part(part.path)


def test_not_a_zip_at_all(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.npy", b"garbage")
    with pytest.raises(PartCorrupt, match="not an array: meta"):
        read_part(path)


def test_each_records_n_count_round_trips_and_an_older_part_reads_as_unknown(
    tmp_path: Path,
) -> None:
    counted = [replace(r, n_bases=n) for r, n in zip(sample(False), (0, 2, 150), strict=True)]
    contents = read_part(write(tmp_path / "new", counted).path)
    assert [r.n_bases for r in contents.results()] == [0, 2, 150]
    # a part of a virnuc before `record_n_bases`: no count, so no `mostly_N`, ever
    contents = read_part(write(tmp_path / "old", sample(False)).path)
    assert "record_n_bases" not in contents.arrays
    assert [r.n_bases for r in contents.results()] == [None, None, None]
