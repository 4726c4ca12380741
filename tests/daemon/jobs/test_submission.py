"""What `check_submission` refuses before a job exists, in process: each refusal's code
and a message naming the file (tests/e2e/test_bad_input.py sends them through virnucd)."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnuc.daemon.jobs import submission
from virnuc.protocol import ErrorCode


def valid_fasta(path: Path) -> Path:
    path.write_text(">r1\nACGTACGTAC\n")
    return path


def test_a_missing_input_is_refused_naming_it(tmp_path: Path) -> None:
    gone = tmp_path / "absent.fa"
    with pytest.raises(submission.SubmitRefused) as refused:
        submission.check_input(gone)
    assert refused.value.code == ErrorCode.INVALID_INPUT
    assert f"input {gone}: no such file" in refused.value.message


def test_unreadable_input_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """At unit level: tests run as root, and root reads a file whatever its mode, so
    a real unreadable file cannot be made here. `check_input` asks `os.access`."""
    fasta = valid_fasta(tmp_path / "secret.fa")
    real_access = submission.os.access

    def access(path: object, mode: int) -> bool:
        return False if Path(str(path)) == fasta else real_access(path, mode)

    monkeypatch.setattr(submission.os, "access", access)
    with pytest.raises(submission.SubmitRefused) as refused:
        submission.check_input(fasta)
    assert refused.value.code == ErrorCode.INVALID_INPUT
    assert str(fasta) in refused.value.message
    assert "permission denied" in refused.value.message
    assert "make it readable" in refused.value.message
