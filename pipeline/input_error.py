"""The one error type for an input file that cannot be used, FASTA or FASTQ alike.

It lives apart from the readers so that every module of `virnuc.pipeline` that
checks input (`fasta`, `fastq`, `record_ids`) can raise it without importing another.
"""

from __future__ import annotations

import os


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
