"""Checks a `submit` request before a job is created: cheap, and every refusal says why.

Only what can be judged in milliseconds happens here (files exist, the caller may
read them, they look like FASTA or FASTQ, the caller may write the output directory
and it does not hold results). The full
validation streams every input and runs in the planner, failing the job with the
file, line and reason if something is found later.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from virnuc.disk_space import describe, free_bytes
from virnuc.pipeline.fasta import GZIP_MAGIC
from virnuc.pipeline.output_format import RUN_INFO
from virnuc.pipeline.outputs import OUTPUT_NAMES
from virnuc.pipeline.report import REPORT_NAMES
from virnuc.pipeline.spec import ModelSpec, ModelSpecError
from virnuc.protocol import ErrorCode, SubmitArgs

from ..caller import Caller
from ..config import DaemonConfig
from .caller_files import (
    CallerRefused,
    OutputDir,
    create_output,
    find_output,
    foreign_results,
    open_input,
    rights_of,
    who_text,
)
from .file_rights import Who
from .input_check import SEPARATOR
from .model_choice import ModelChoice, choose_models

# "name" or "owner/name" on the Hugging Face hub (what the DNABERT loader downloads).
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


class SubmitRefused(Exception):
    """Raised by `check_submission`: the error code and message the client gets."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CheckedSubmission:
    """What the checks found, for the new job: its models, the identity "DEV:INODE" of
    the output directory they opened (made, if missing) and the fingerprint of the input
    files they opened, so a path swapped after submit fails the job, never redirects it."""

    spec: ModelSpec
    output_identity: str
    input_fingerprint: str
    model_set: str | None = None  # the name of the config's model set it uses, if any


def check_submission(
    args: SubmitArgs, config: DaemonConfig, busy_outputs: set[str], caller: Caller | None
) -> CheckedSubmission:
    """Validate inputs, output and models with the caller's rights (caller_files.py;
    None: virnucd's own); the output directory is created last, once all else passed."""
    who = rights_of(caller)
    prints = [check_input(path, config.input_roots, who) for path in args.paths]
    target = args.output
    with _os_refusals("output", target):
        out = find_output(target, who)
    try:
        with _os_refusals("output", target):
            check_allowed("output", Path(target), config.output_roots, real=out.real)
            check_output(out, who, force=args.force, busy=busy_outputs)
        check_state_space(config)
        models = check_models(args, config)
        with _os_refusals("output", target):
            identity = create_output(out, who)
    finally:
        out.close()
    set_name = models.model_set.name if models.model_set else None
    return CheckedSubmission(models.spec, identity, SEPARATOR.join(prints), set_name)


def check_state_space(config: DaemonConfig) -> None:
    """A job needs room on the state disk for its units and parts; refuse it up front
    rather than let it start and stall (`state_min_free_mb`)."""
    free = free_bytes(config.state_dir)
    if free is not None and free < config.state_min_free:
        raise SubmitRefused(
            ErrorCode.NO_SPACE,
            f"the state disk is full: {describe(config.state_dir, config.state_min_free)}"
            " (state_min_free_mb); free some space and submit again",
        )


@contextmanager
def _os_refusals(what: str, path: Path | str) -> Iterator[None]:
    """A path the OS itself refuses (name too long, a symlink loop, an I/O error) is
    the client's `invalid_input`, never a daemon `internal` error; a right the caller
    lacks is `forbidden`."""
    try:
        yield
    except CallerRefused as exc:
        code = ErrorCode.FORBIDDEN if exc.forbidden else ErrorCode.INVALID_INPUT
        raise SubmitRefused(code, exc.message) from exc
    except FileNotFoundError as exc:
        raise SubmitRefused(ErrorCode.INVALID_INPUT, f"{what} {path}: no such file") from exc
    except NotADirectoryError as exc:
        raise SubmitRefused(
            ErrorCode.INVALID_INPUT,
            f"{what} {path}: {exc.filename} is a file, not a directory, so {path} "
            + ("cannot be created; choose another --out" if what == "output" else "is none"),
        ) from exc
    except PermissionError as exc:  # virnucd's own rights (the caller's were checked)
        raise _unreadable(what, path, exc.strerror or "permission denied") from exc
    except (OSError, RuntimeError) as exc:
        raise SubmitRefused(ErrorCode.INVALID_INPUT, f"{what} {path}: {_os_reason(exc)}") from exc


def _os_reason(exc: OSError | RuntimeError) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:  # the walk's own count too
        return "a symlink loop (too many levels of symbolic links); fix or remove the symlink"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{exc}; fix or remove the symlink"  # pathlib's "Symlink loop from ..."


def check_allowed(
    what: str, path: Path, roots: tuple[str, ...], kind: str = "", real: str | None = None
) -> None:
    """The path, with `..` and symlinks resolved (`real`, as a walk found it; else
    resolved here), must lie under an allowed root (of the `{kind}_roots` setting;
    `kind` defaults to `what`)."""
    kind = kind or what
    resolved = Path(real) if real is not None else path.resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise SubmitRefused(
            ErrorCode.FORBIDDEN,
            f"{what} {path} resolves to {resolved}, outside the allowed {kind} roots "
            f"({', '.join(roots)}); see {kind}_roots in the virnucd config",
        )


def check_input(path: str, roots: tuple[str, ...], who: Who | None) -> str:
    """The input is a regular file `who` may read (and virnucd too), under the input
    roots, starting like FASTA, FASTQ or gzip (whose contents the planner's scan
    judges); returns the fingerprint of the file opened."""
    with _os_refusals("input", path), open_input(path, who) as opened:
        check_allowed("input", Path(path), roots, real=opened.real)
        head = os.pread(opened.fd, 4096, 0)
        check_head(path, head)
        return opened.fingerprint()


def check_head(path: str, head: bytes) -> None:
    if not head:
        raise SubmitRefused(
            ErrorCode.INVALID_INPUT, f"input {path}: empty file (0 bytes), nothing to classify"
        )
    if head.startswith(GZIP_MAGIC):
        return
    text = head.lstrip()
    if text.startswith((b">", b"@")):  # FASTA or FASTQ
        return
    _refuse_other_compression(path, head)
    if _looks_binary(head):
        raise SubmitRefused(
            ErrorCode.INVALID_INPUT,
            f"input {path}: binary data, not a FASTA or FASTQ file (nor gzip-compressed)",
        )
    raise SubmitRefused(
        ErrorCode.INVALID_INPUT,
        f"input {path}: not a FASTA or FASTQ file; FASTA starts with a '>' header line, "
        "FASTQ with an '@' one",
    )


#: Compressions people keep sequencing data in that virnuc does not read: magic bytes,
#: the format's name, and the command that decompresses a file, keeping it.
_OTHER_COMPRESSIONS = (
    (b"BZh", "bzip2", "bunzip2 -k"),
    (b"\xfd7zXZ\x00", "xz", "unxz -k"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),  # zstd keeps the source by default
)


def _refuse_other_compression(path: str, head: bytes) -> None:
    """A bzip2, xz or zstd file is refused naming its format and the fix, not as
    "binary data", which leaves the user guessing."""
    for magic, name, decompress in _OTHER_COMPRESSIONS:
        if head.startswith(magic):
            raise SubmitRefused(
                ErrorCode.INVALID_INPUT,
                f"input {path} is {name}-compressed; virnuc reads plain or gzip FASTA/FASTQ: "
                f"decompress it ({decompress} {shlex.quote(path)}) or recompress it with gzip",
            )


def output_busy(path: Path | str) -> SubmitRefused:
    return SubmitRefused(
        ErrorCode.CONFLICT,
        f"output {path}: another unfinished job writes there; "
        "wait for it (virnucctl wait), kill it, or choose another --out",
    )


def too_many_jobs(limit: int, unfinished: int) -> SubmitRefused:
    """The owner has `max_jobs_per_owner` unfinished jobs already: a conflict with the
    queue's state, which ends as the owner's jobs finish (not a policy on the request)."""
    return SubmitRefused(
        ErrorCode.CONFLICT,
        f"you have {unfinished} unfinished jobs, and this virnucd takes at most {limit} "
        "per user (max_jobs_per_owner); wait for one to finish (virnucctl wait) or kill "
        "one (virnucctl kill), then submit again",
    )


def _unreadable(what: str, path: Path | str, reason: str) -> SubmitRefused:
    """The kernel refused virnucd itself (the caller's own rights were judged before):
    what the user can do about it, for an input, an output or another path."""
    if what == "output":
        return SubmitRefused(
            ErrorCode.INVALID_INPUT,
            f"output {path}: {reason}: virnucd (uid {os.geteuid()}) cannot reach it; let "
            "that user (or its group) search and write the directory, or choose another --out",
        )
    if what != "input":
        return SubmitRefused(ErrorCode.INVALID_INPUT, f"{what} {path}: {reason}")
    return SubmitRefused(
        ErrorCode.INVALID_INPUT,
        f"input {path}: {reason}: virnucd (uid {os.geteuid()}) cannot read it; "
        "make it readable by that user, or copy it somewhere it can read",
    )


def _looks_binary(head: bytes) -> bool:
    """NUL or other control bytes, or not UTF-8: no FASTA (or FASTQ) text file."""
    if any(b < 32 and b not in b"\t\n\r\x0b\x0c" for b in head):
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(head) - 4  # a character cut at the 4 KiB edge is text
    return False


def check_output(out: OutputDir, who: Who | None, *, force: bool, busy: set[str]) -> None:
    """The output directory (found writable by `find_output`) is not busy and holds no
    old results, or `force` replaces them, which must be results `who` could replace."""
    if out.path in busy:
        raise output_busy(out.path)
    if out.found.fd is None:
        return
    present = [name for name in OUTPUT_NAMES if _lexists(out.found.fd, name)]
    if present and not force:
        raise SubmitRefused(
            ErrorCode.CONFLICT,
            f"output {out.path} already holds results ({', '.join(present)}); "
            "choose another --out or pass --force to replace them",
        )
    if force and (foreign := foreign_results(out, who, (*OUTPUT_NAMES, RUN_INFO, *REPORT_NAMES))):
        assert who is not None
        raise SubmitRefused(
            ErrorCode.FORBIDDEN,
            f"output {out.path}: --force would replace {', '.join(foreign)}, another "
            f"user's files in this sticky directory, which {who_text(who)} may not replace",
        )


def _lexists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def check_models(args: SubmitArgs, config: DaemonConfig) -> ModelChoice:
    """The job's models (model_choice.py): paths the submit names must lie under
    `model_roots`; a set's are the admin's. Either way the files must be there."""
    try:
        choice = choose_models(args, config)
    except ModelSpecError as exc:
        raise SubmitRefused(ErrorCode.INVALID_INPUT, str(exc)) from exc
    except (OSError, RuntimeError) as exc:  # resolving the classifier's path
        raise SubmitRefused(
            ErrorCode.INVALID_INPUT, f"classifier {args.classifier}: {_os_reason(exc)}"
        ) from exc
    spec = choice.spec
    if spec.profile is not None:  # the demo profile's models are the daemon's own
        return choice
    if choice.model_set is None:
        _check_model_roots(spec, config.model_roots)
    try:
        _check_model_files(spec)
    except SubmitRefused as exc:
        if choice.model_set is None:
            raise
        raise SubmitRefused(
            exc.code,
            f"model set {choice.model_set.name!r} of virnucd's config: {exc.message} "
            "(tell virnucd's administrator)",
        ) from exc
    return choice


def _check_model_files(spec: ModelSpec) -> None:
    _check_model_path("classifier", spec.classifier, want_dir=False)
    if spec.esm.endswith(".pt"):
        _check_model_path("ESM-2 checkpoint", spec.esm, want_dir=False)
    if spec.dnabert.startswith(("/", ".")):
        _check_model_path("DNABERT-S directory", spec.dnabert, want_dir=True)


def _check_model_roots(spec: ModelSpec, roots: tuple[str, ...]) -> None:
    """Every model file or directory the spec names lies under `model_roots`; `~` is
    expanded as the loaders expand it."""
    paths = [("classifier", spec.classifier)]
    if spec.esm.endswith(".pt"):  # a file, as the ESM loader decides; else a known name
        # fair-esm reads the contact-regression file beside it, so that one counts too.
        regression = spec.esm.removesuffix(".pt") + "-contact-regression.pt"
        paths += [("ESM-2 checkpoint", spec.esm), ("ESM-2 checkpoint", regression)]
    with _os_refusals("DNABERT-S directory", Path(spec.dnabert)):
        if _is_dnabert_path(spec.dnabert):  # else a hub id, whose files are data only
            paths.append(("DNABERT-S directory", spec.dnabert))
    for what, value in paths:
        with _os_refusals(what, Path(value)):
            check_allowed(what, Path(value).expanduser(), roots, kind="model")


def _is_dnabert_path(value: str) -> bool:
    """Whether the DNABERT loader reads `value` as a directory, not a hub id: it looks
    like a path, is not shaped like a hub id, or exists (the loader tries that first)."""
    looks_like_path = value.startswith(("/", ".", "~")) or not _HUB_ID.fullmatch(value)
    return looks_like_path or Path(value).expanduser().exists()


def _check_model_path(what: str, value: str, *, want_dir: bool) -> None:
    path = Path(value)
    try:
        ok = path.is_dir() if want_dir else path.is_file()
    except OSError as exc:
        raise SubmitRefused(ErrorCode.INVALID_INPUT, f"{what} {path}: {_os_reason(exc)}") from exc
    if not ok:
        kind = "directory" if want_dir else "file"
        raise SubmitRefused(ErrorCode.INVALID_INPUT, f"{what} {path}: no such {kind}")
