"""Checks a `submit` request before a job is created: cheap, and every refusal says why.

Only what can be judged in milliseconds happens here (files exist, look like FASTA,
the output directory can be written and does not hold results). The full FASTA
validation streams the whole file and runs in the planner, failing the job with
the line and reason if something is found later.
"""

from __future__ import annotations

import os
from pathlib import Path

from virnuc.pipeline.fasta import GZIP_MAGIC
from virnuc.pipeline.outputs import OUTPUT_NAMES
from virnuc.pipeline.spec import ModelSpec, ModelSpecError, resolve_spec
from virnuc.protocol import ErrorCode, SubmitArgs

from .config import DaemonConfig


class SubmitRefused(Exception):
    """Raised by `check_submission`: the error code and message the client gets."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def check_submission(args: SubmitArgs, config: DaemonConfig, busy_outputs: set[str]) -> ModelSpec:
    """Validate input, output and models; return the resolved model spec."""
    check_allowed("input", Path(args.input), config.input_roots)
    check_allowed("output", Path(args.output), config.output_roots)
    check_input(Path(args.input))
    check_output(Path(args.output), force=args.force, busy=busy_outputs)
    return check_models(args, config)


def check_allowed(what: str, path: Path, roots: tuple[str, ...]) -> None:
    """The path, with `..` and symlinks resolved, must lie under an allowed root."""
    real = path.resolve()
    if not any(real.is_relative_to(root) for root in roots):
        raise SubmitRefused(
            ErrorCode.FORBIDDEN,
            f"{what} {path} resolves to {real}, outside the allowed {what} roots "
            f"({', '.join(roots)}); see input_roots/output_roots in the virnucd config",
        )


def check_input(path: Path) -> None:
    if not path.exists():
        raise SubmitRefused(ErrorCode.INVALID_INPUT, f"input {path}: no such file")
    if not path.is_file():
        raise SubmitRefused(ErrorCode.INVALID_INPUT, f"input {path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise SubmitRefused(ErrorCode.INVALID_INPUT, f"input {path}: permission denied")
    with path.open("rb") as handle:
        head = handle.read(4096)
    if not head:
        raise SubmitRefused(ErrorCode.INVALID_INPUT, f"input {path}: empty file")
    if not head.startswith(GZIP_MAGIC) and not head.lstrip().startswith(b">"):
        hint = " (FASTQ?)" if head.lstrip().startswith(b"@") else ""
        raise SubmitRefused(
            ErrorCode.INVALID_INPUT, f"input {path}: not a FASTA file{hint}; it must start with '>'"
        )


def check_output(path: Path, *, force: bool, busy: set[str]) -> None:
    if str(path) in busy:
        raise SubmitRefused(
            ErrorCode.CONFLICT, f"output {path}: another unfinished job writes there"
        )
    if path.exists() and not path.is_dir():
        raise SubmitRefused(
            ErrorCode.INVALID_INPUT, f"output {path}: exists and is not a directory"
        )
    existing = [name for name in OUTPUT_NAMES if (path / name).exists()]
    if existing and not force:
        raise SubmitRefused(
            ErrorCode.CONFLICT,
            f"output {path} already holds results ({', '.join(existing)}); "
            "choose another --out or pass --force to replace them",
        )
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise SubmitRefused(ErrorCode.INVALID_INPUT, f"output {path}: {ancestor} is not writable")


def check_models(args: SubmitArgs, config: DaemonConfig) -> ModelSpec:
    try:
        spec = resolve_spec(
            profile=args.profile,
            esm=args.esm,
            dnabert=args.dnabert,
            classifier=args.classifier,
            chunk_length=args.chunk_length,
            cache_dir=config.model_cache,
        )
    except ModelSpecError as exc:
        raise SubmitRefused(ErrorCode.INVALID_INPUT, str(exc)) from exc
    if spec.profile is None:
        _check_model_path("classifier", spec.classifier, want_dir=False)
        if spec.esm.endswith(".pt"):
            _check_model_path("ESM-2 checkpoint", spec.esm, want_dir=False)
        if spec.dnabert.startswith(("/", ".")):
            _check_model_path("DNABERT-S directory", spec.dnabert, want_dir=True)
    return spec


def _check_model_path(what: str, value: str, *, want_dir: bool) -> None:
    path = Path(value)
    ok = path.is_dir() if want_dir else path.is_file()
    if not ok:
        kind = "directory" if want_dir else "file"
        raise SubmitRefused(ErrorCode.INVALID_INPUT, f"{what} {path}: no such {kind}")
