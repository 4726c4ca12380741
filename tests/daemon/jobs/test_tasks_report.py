"""The report a job writes beside its outputs: never over a file it did not write
(tests/pipeline/test_report.py tests the report itself)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from virnuc.pipeline.output_format import RUN_INFO
from virnuc.pipeline.outputs import RecordResult, ResultWriter


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


def test_a_job_never_replaces_a_report_file_it_did_not_write(tmp_path: Path) -> None:
    import asyncio
    from types import SimpleNamespace

    from virnuc.daemon.jobs import tasks as job_tasks
    from virnuc.pipeline.spec import ModelSpec

    out = outputs(tmp_path / "out", [record("a", [0.9])])
    (out / "report.html").write_text("theirs")
    spec = ModelSpec("/m/esm.pt", "/m/dnabert", "/m/classifier.pth", 300)
    row = SimpleNamespace(
        job_id="j1",
        output=str(out),
        input="/in.fa",
        inputs=("/in.fa",),
        spec=spec,
        created_at=0.0,
        model_set=None,
        save_embeddings=False,
        checkpoint_every=1000,
        force=False,
        owner=None,
        output_identity=f"{out.stat().st_dev}:{out.stat().st_ino}",  # as opened at submit
    )
    asyncio.run(job_tasks._report(row))  # type: ignore[arg-type]
    assert (out / "report.html").read_text() == "theirs"
    assert not (out / "prediction.png").exists()
    assert not (out / RUN_INFO).exists()
    asyncio.run(job_tasks._report(SimpleNamespace(**{**vars(row), "force": True})))  # type: ignore[arg-type]
    page = (out / "report.html").read_text()
    assert page != "theirs"
    assert str(out) in page  # the user's path, never the opened directory's
    assert "/proc/self/fd" not in page
    info = json.loads((out / RUN_INFO).read_text())
    assert info["inputs"] == ["/in.fa"]
    assert info["output"] == str(out)
    assert info["models"]["classifier"] == {
        "given": "/m/classifier.pth",
        "files": [{"path": "/m/classifier.pth", "missing": True}],
    }
    assert "/m/classifier.pth" in page  # the report shows what run_info.json says
