"""pipeline/durable.py: a file published under its name whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnuc.pipeline.durable import publish


def test_publish_replaces_the_file_whole_and_leaves_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_bytes(b"old")
    publish(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_a_failed_publish_keeps_the_old_file_and_removes_its_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.html"
    target.write_bytes(b"old")

    def refuse(*_: object) -> None:
        raise OSError("rename refused")

    monkeypatch.setattr("virnuc.pipeline.durable.os.replace", refuse)
    with pytest.raises(OSError, match="rename refused"):
        publish(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
