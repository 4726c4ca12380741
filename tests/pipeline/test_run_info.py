"""run_info.json: what ran, how, and each model file's size and SHA-256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from virnuc import __version__
from virnuc.pipeline.output_format import RUN_INFO
from virnuc.pipeline.run_info import build_run_info, file_digest, write_run_info
from virnuc.pipeline.spec import ModelSpec, demo_spec


def test_each_local_model_file_is_named_sized_and_hashed(tmp_path: Path) -> None:
    classifier = tmp_path / "300_model.pth"
    classifier.write_bytes(b"x" * 3_000_000)  # more than one hashing block
    dnabert = tmp_path / "dnabert"
    (dnabert / "sub").mkdir(parents=True)
    (dnabert / "config.json").write_text("{}")
    (dnabert / "sub" / "w.bin").write_bytes(b"w")
    spec = ModelSpec("esm2_t36_3B_UR50D", str(dnabert), str(classifier), 300, precision="bf16")

    info = build_run_info(
        spec, inputs=["/in.fa"], output="/out", devices=["cuda:0"], options={"force": True}
    )

    assert info["virnuc_version"] == __version__
    assert info["precision"] == "bf16"
    assert info["demo_models"] is False
    assert info["created_utc"].endswith("+00:00")
    assert info["models"]["esm"] == {"given": "esm2_t36_3B_UR50D", "files": []}  # a name
    (file,) = info["models"]["classifier"]["files"]
    assert file == {
        "path": str(classifier),
        "size": 3_000_000,
        "sha256": hashlib.sha256(classifier.read_bytes()).hexdigest(),
    }
    paths = [f["path"] for f in info["models"]["dnabert"]["files"]]
    assert paths == [str(dnabert / "config.json"), str(dnabert / "sub" / "w.bin")]


def test_demo_models_are_named_as_demo_not_by_their_cache_path(tmp_path: Path) -> None:
    spec = demo_spec(tmp_path / "a-temporary-state-dir")
    Path(spec.classifier).parent.mkdir(parents=True)
    Path(spec.classifier).write_bytes(b"c")

    info = build_run_info(spec, inputs=[], output="/out", devices=[], options={})

    assert info["demo_models"] is True
    classifier = info["models"]["classifier"]
    assert "a-temporary-state-dir" not in json.dumps(info)
    assert classifier["given"].startswith("demo profile")
    assert classifier["files"][0]["path"] == "demo-v2/classifier.pth"
    assert info["models"]["esm"]["files"] == [{"path": "demo-v2/esm2_t2_demo.pt", "missing": True}]


def test_an_unreadable_file_is_missing_not_an_error(tmp_path: Path) -> None:
    assert file_digest(tmp_path / "gone.pth") == {"missing": True}


def test_it_is_published_atomically_as_json(tmp_path: Path) -> None:
    path = write_run_info(tmp_path, {"a": 1})
    assert path == tmp_path / RUN_INFO
    assert json.loads(path.read_text()) == {"a": 1}
    assert not list(tmp_path.glob(".*.partial"))
