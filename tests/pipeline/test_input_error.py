"""pipeline/input_error.py: an unusable input's error names the file, the line, why."""

from __future__ import annotations

from pathlib import Path

from virnuc.pipeline.input_error import FastaError, FastqError


def test_the_message_leads_with_the_file_and_line_and_keeps_each_part() -> None:
    error = FastqError(Path("/data/r.fq"), "missing '+' line", line=7)
    assert str(error) == "/data/r.fq, line 7: missing '+' line"
    assert (error.path, error.line, error.reason) == ("/data/r.fq", 7, "missing '+' line")
    assert isinstance(error, FastaError)
    assert isinstance(error, ValueError)


def test_without_a_line_the_message_names_only_the_file() -> None:
    assert str(FastaError("/data/in.fa", "is a directory")) == "/data/in.fa: is a directory"
