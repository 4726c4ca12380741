"""The one error type for an input file that cannot be used, FASTA or FASTQ alike.

It lives apart from the readers so that every module of `virnuc.pipeline` that
checks input (`fasta`, `fastq`, `record_ids`) can raise it without importing another.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import BinaryIO


class FastaError(ValueError):
    """Raised by the input readers for any input they cannot use: where and why.

    (The name predates FASTQ input; FASTQ problems raise it too, as `FastqError`.)
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, *, line: int | None = None):
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = str(path)
        self.line = line
        self.reason = reason


class FastqError(FastaError):
    """A FASTQ file that cannot be used (a quality line of the wrong length, a missing
    '+' line, a truncated read, ...): the file, the line and why."""


def unreadable_error(path: str | os.PathLike[str], exc: BaseException, line: int) -> FastaError:
    """A read that failed at `line`: a damaged .gz, or the disk itself."""
    if isinstance(exc, EOFError | zlib.error | gzip.BadGzipFile):
        return FastaError(
            path,
            f"the compressed data ends early or is damaged ({exc}); a truncated .gz? "
            "Copy or compress the file again (check it with `gzip -t`)",
            line=line,
        )
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return FastaError(path, f"cannot read the file: {reason}", line=line)


def open_input(path: str | os.PathLike[str]) -> BinaryIO:
    """The input file's raw bytes; a missing file, a directory or one we may not read
    is a `FastaError` saying so."""
    path = Path(path)
    if not path.exists():
        raise FastaError(path, "no such file")
    if path.is_dir():
        raise FastaError(path, "is a directory, not a FASTA file")
    try:
        return path.open("rb")
    except PermissionError as exc:
        raise FastaError(path, "permission denied") from exc
