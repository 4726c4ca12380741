"""prediction.png and report.html from real output files (the real ResultWriter), and
`virnucctl report`: the top records in order, images inline, bounded state."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from virnuc.client import cli
from virnuc.pipeline.outputs import RecordResult, ResultWriter
from virnuc.pipeline.report import write_report


def record(record_id: str, p_virus: list[float]) -> RecordResult:
    """One frame per chunk, chunk k scored `p_virus[k]`."""
    scores = np.array([[1 - p, p] for p in p_virus], dtype=np.float32)
    ids = [f"{record_id}_chunk_{k + 1}F1" for k in range(len(p_virus))]
    return RecordResult(record_id, 300 * len(p_virus), len(p_virus), ids, scores)


def outputs(out: Path, records: list[RecordResult]) -> Path:
    with ResultWriter(out) as writer:
        for result in records:
            writer.write(result)
        writer.commit()
    return out


def test_the_report_shows_the_top_records_in_order_with_inline_images(tmp_path: Path) -> None:
    rng = random.Random(3)
    records = [record(f"r{i}", [rng.random() for _ in range(3)]) for i in range(60)]
    out = outputs(tmp_path / "out", records)
    summary = write_report(out, top=5, run_info={"precision": "fp32"})
    best = sorted(records, key=lambda r: -float(r.scores[:, 1].max()))[:5]
    assert [t.record_id for t in summary.top] == [r.record_id for r in best]
    assert sum(summary.histogram) + summary.unscored == summary.records == 60
    assert summary.details_kept <= 5  # only the top records' chunks were kept
    assert (out / "prediction.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2
    assert "http://" not in page  # nothing is fetched when it is opened
    assert "https://" not in page
    positions = [page.index(f">{r.record_id}<") for r in best]
    assert positions == sorted(positions)
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]


def test_virnucctl_report_writes_the_files_and_exits_4_without_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = outputs(tmp_path / "out", [record("a", [0.9, 0.1]), record("b", [0.2])])
    assert cli.main(["report", str(out), "--top", "2"]) == 0
    assert (out / "report.html").exists()
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 4
    assert "no complete outputs" in capsys.readouterr().err


def test_a_job_never_replaces_a_report_file_it_did_not_write(tmp_path: Path) -> None:
    import asyncio
    from types import SimpleNamespace

    from virnuc.daemon import job_tasks
    from virnuc.pipeline.spec import ModelSpec

    out = outputs(tmp_path / "out", [record("a", [0.9])])
    (out / "report.html").write_text("theirs")
    spec = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300)
    row = SimpleNamespace(
        job_id="j1", output=str(out), input="/in.fa", spec=spec, created_at=0.0, force=False
    )
    asyncio.run(job_tasks._report(row))  # type: ignore[arg-type]
    assert (out / "report.html").read_text() == "theirs"
    assert not (out / "prediction.png").exists()
    asyncio.run(job_tasks._report(SimpleNamespace(**{**vars(row), "force": True})))  # type: ignore[arg-type]
    assert (out / "report.html").read_text() != "theirs"
