"""`virnucctl compare-precision`'s options and failures before any job runs: the input
refused in submit's words (exit 4), usage errors (exit 2), an absent virnucd (exit 3),
and the work dir gone whatever ended the command. Jobs and the report: the e2e test."""

from __future__ import annotations

import bz2
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from virnuc.client import compare_precision
from virnuc.client.cli import (
    EXIT_INTERRUPTED,
    EXIT_INVALID_INPUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    build_parser,
    main,
)
from virnuc.client.sample_input import write_fasta


def _run(tmp_path: Path, *args: str) -> int:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return main(["compare-precision", *args, "--work-dir", str(work)])


def _work_is_empty(tmp_path: Path) -> bool:
    return list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (bz2.compress(b">a\nACGT\n"), "bzip2-compressed"),
        (b"", "empty file"),
        (b">a\nACGT\n>b\nACXJ\n", "in.fa, line 4"),
        (b">a\nACGT\n>a\nACGT\n", "'a'"),
    ],
)
def test_bad_input_exits_4_naming_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    path = tmp_path / "in.fa"
    path.write_bytes(content)
    assert _run(tmp_path, str(path), "--state-dir", str(tmp_path / "none")) == EXIT_INVALID_INPUT
    assert expected in capsys.readouterr().err
    assert _work_is_empty(tmp_path)


def test_a_missing_input_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, str(tmp_path / "nope.fa")) == EXIT_INVALID_INPUT
    assert "nope.fa" in capsys.readouterr().err


def test_no_virnucd_exits_3_and_leaves_no_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.fa"
    path.write_text(">a\nACGT\n")
    state = ["--state-dir", str(tmp_path / "none"), "--timeout", "0.5"]
    assert _run(tmp_path, str(path), *state) == EXIT_UNREACHABLE
    assert "virnucd" in capsys.readouterr().err
    assert _work_is_empty(tmp_path)


@pytest.mark.parametrize(
    "options",
    [
        ["--models", "big", "--profile", "demo"],
        ["--models", "big", "--device", "cpu"],  # private: --models needs --config
        ["--precision", "fp32"],
        ["--sample", "0"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, options: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["compare-precision", str(tmp_path / "in.fa"), *options])
    assert caught.value.code == EXIT_USAGE


def test_listed_in_virnucctl_help() -> None:
    assert "compare-precision" in build_parser().format_help()


def test_ctrl_c_while_sampling_exits_130_and_removes_the_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGINT, delivered once the sample is on disk, before any job."""
    written: list[Path] = []

    def write_then_interrupt(records: Any, path: Path) -> None:
        write_fasta(records, path)
        written.append(path)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(compare_precision, "write_fasta", write_then_interrupt)
    path = tmp_path / "in.fa"
    path.write_text(">a\nACGT\n")
    assert _run(tmp_path, str(path), "--state-dir", str(tmp_path / "none")) == EXIT_INTERRUPTED
    assert written
    assert not written[0].exists()
    assert _work_is_empty(tmp_path)
