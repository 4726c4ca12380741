"""virnucctl: the command line for virnuc.

Commands: ``submit``, ``status``, ``list``, ``wait``, ``kill``, ``workers`` talk to a
running virnucd (found by --state-dir, $VIRNUC_STATE_DIR, $XDG_STATE_HOME/virnuc or
--endpoint; over tcp:// with --curve-server-key and --curve-client-key); ``predict``
starts a private virnucd for one prediction; ``keys generate`` writes a CURVE key pair.

Exit codes (stable, for scripts):
  0    success
  1    the job failed or was killed, or an unexpected error
  2    usage error (bad options)
  3    virnucd did not answer (not running, or the wrong --state-dir/--endpoint)
  4    invalid input, unknown job, conflict or forbidden (the daemon's error codes
       invalid_input, not_found, conflict, forbidden): the message names the file,
       job or directory
  5    try again later: the daemon is shutting down (error code stopping) or its
       state disk is full (no_space)
  130  interrupted (Ctrl-C)
  141  stdout was closed early (e.g. piped into head), as for a tool killed by SIGPIPE

While following a job (wait, status --follow, submit --wait) a poll that virnucd does
not answer within --timeout is asked again; exit 3 comes once it has been silent for
--give-up-after seconds, or at once when its socket is gone.

(errors.py holds the one table mapping daemon error codes to exit codes.)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import suppress

from virnuc.protocol.constants import PRECISIONS

from .commands import DEMO_NOTICE, run_command
from .errors import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID_INPUT,
    EXIT_OK,
    EXIT_STOPPING,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ClientError,
)
from .follow import GIVE_UP_AFTER
from .keys import keys_command

__all__ = [
    "DEMO_NOTICE",
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID_INPUT",
    "EXIT_OK",
    "EXIT_STOPPING",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

DEFAULT_TIMEOUT = 10.0


def _exit_codes_help() -> str:
    """The docstring's exit-code table, reused as every parser's epilog."""
    text = __doc__ or ""
    start = text.find("Exit codes")
    return text[start : text.find("\n\n", start)] if start >= 0 else ""


EXIT_CODES_HELP = _exit_codes_help()


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Model options shared by ``submit`` and ``predict``; the daemon resolves them."""
    group = parser.add_argument_group("models")
    group.add_argument(
        "--profile", choices=["demo"], help="tiny random models, for trying the pipeline"
    )
    group.add_argument(
        "--esm", help="fair-esm ESM-2 name or local .pt file (default esm2_t36_3B_UR50D)"
    )
    group.add_argument(
        "--dnabert", help="DNABERT-S hub id or local directory (default zhihan1996/DNABERT-S)"
    )
    group.add_argument("--classifier", help="VirNucPro classifier: 300_model.pth or 500_model.pth")
    group.add_argument(
        "--chunk-length",
        type=int,
        choices=[300, 500],
        help="chunk length; default from the classifier's name, else 300",
    )
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32 (VirNucPro's numbers; the daemon's default unless configured), "
        "tf32 or bf16 (faster on GPUs, scores differ slightly: see README)",
    )


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """INPUT..., --out and the per-job switches shared by ``submit`` and ``predict``."""
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="FASTA or FASTQ file (plain or .gz); several make one job, outputs in their order",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--save-embeddings", action="store_true", help="also write embeddings.h5")
    parser.add_argument("--force", action="store_true", help="replace results already in --out")
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        metavar="N",
        help="records per checkpoint part (default: the daemon's)",
    )
    add_model_options(parser)


def _connection_options(defaults: bool, timeout_only: bool = False) -> argparse.ArgumentParser:
    """Where the daemon is; accepted before or after the command name.

    The top-level parser holds the defaults; each command's copy uses SUPPRESS so
    an option given before the command is not reset by the command's parser.
    ``predict`` runs its own daemon, so it takes only ``--timeout``.
    """
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("daemon")

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    group.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        default=default(DEFAULT_TIMEOUT),
        help=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT:g})",
    )
    if timeout_only:
        return parent
    group.add_argument(
        "--state-dir",
        metavar="DIR",
        default=default(None),
        help="virnucd's state dir (default $VIRNUC_STATE_DIR, else $XDG_STATE_HOME/virnuc)",
    )
    group.add_argument(
        "--endpoint", metavar="URL", default=default(None), help="control endpoint, e.g. tcp://…"
    )
    group.add_argument(
        "--events-endpoint",
        metavar="URL",
        default=default(None),
        help="events endpoint (default: beside an ipc:// control socket, else polling only)",
    )
    group.add_argument(
        "--curve-server-key",
        metavar="FILE",
        default=default(None),
        help="the daemon's public CURVE key (server.key), for tcp:// "
        "(default $VIRNUC_CURVE_SERVER_KEY)",
    )
    group.add_argument(
        "--curve-client-key",
        metavar="FILE",
        default=default(None),
        help="your secret CURVE key (NAME.key_secret, from `virnucctl keys generate`) "
        "(default $VIRNUC_CURVE_CLIENT_KEY)",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="virnucctl",
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_connection_options(defaults=True)],
    )
    connection = _connection_options(defaults=False)
    timeout_only = _connection_options(defaults=False, timeout_only=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, private: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[timeout_only if private else connection],
        )
        sub.add_argument("--json", action="store_true", help="print the result map as JSON")
        return sub

    _add_submit(command("submit", "submit FASTA/FASTQ files as one job; print the job id"))
    _add_status(command("status", "show one job, or every job"))
    command("list", "list every job, oldest first")
    wait = command("wait", "show progress until a job ends; exit 0 done, 1 failed or killed")
    wait.add_argument("job", metavar="JOB")
    add_follow_options(wait)
    command("kill", "stop a job").add_argument("job", metavar="JOB")
    command("workers", "show the worker processes: pid, device, state, job and unit")
    _add_predict(
        command("predict", "predict FASTA/FASTQ files on a private virnucd and wait", private=True)
    )
    _add_keys(commands)
    _add_report(commands)
    return parser


def _add_report(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``report DIR``: reads local files only, so no daemon options."""
    help_text = "write prediction.png and report.html for an existing output directory"
    report = commands.add_parser(
        "report",
        help=help_text,
        description=help_text,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("dir", metavar="DIR", help="a complete output directory (--out)")
    report.add_argument(
        "--top", type=positive_int, default=20, metavar="N", help="records to plot (default 20)"
    )
    report.add_argument("--json", action="store_true", help="print the report summary as JSON")


def add_follow_options(parser: argparse.ArgumentParser) -> None:
    """How long following a job keeps asking a virnucd that does not answer."""
    parser.add_argument(
        "--give-up-after",
        type=positive_float,
        metavar="SECONDS",
        default=GIVE_UP_AFTER,
        help="while following a job, keep asking a virnucd that does not answer (each try "
        f"waits --timeout) for this long, then exit 3 (default {GIVE_UP_AFTER:g})",
    )


def _add_submit(sub: argparse.ArgumentParser) -> None:
    add_job_options(sub)
    sub.add_argument(
        "--wait", action="store_true", help="after printing the id, wait like `virnucctl wait`"
    )
    add_follow_options(sub)


def _add_status(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("job", metavar="JOB", nargs="?", help="a job id (default: every job)")
    sub.add_argument("--follow", action="store_true", help="show live progress until the job ends")
    add_follow_options(sub)


def _add_predict(sub: argparse.ArgumentParser) -> None:
    add_job_options(sub)
    sub.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    sub.add_argument("--workers", type=positive_int, default=1, help="worker processes (default 1)")


def _add_keys(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keys generate``: local files only, so no daemon options."""
    keys = commands.add_parser(
        "keys", help="CURVE key pairs for tcp:// (README: Security)", description=KEYS_HELP
    )
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = actions.add_parser(
        "generate",
        help="write NAME.key (public) and NAME.key_secret (secret, 0600)",
        description=KEYS_HELP,
    )
    generate.add_argument(
        "--dir", metavar="DIR", help="where to write them (default ~/.config/virnuc/keys)"
    )
    generate.add_argument(
        "--name", default="client", help="file name stem (default client; server for virnucd's)"
    )
    generate.add_argument("--json", action="store_true", help="print the two paths as JSON")


KEYS_HELP = (
    "CURVE key pairs: virnucd listens on tcp:// only with CURVE. Make the daemon's pair with "
    "`virnucctl keys generate --dir STATE_DIR/curve --name server`, each client's with "
    "`virnucctl keys generate`, and copy each client's public NAME.key into the daemon's "
    "curve_allow_dir (default STATE_DIR/curve/clients)."
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run virnucctl; the exit status (above). A reader that stops reading early
    (`virnucctl list | head -3`) ends it quietly with 141, never a traceback."""
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
    except BrokenPipeError:
        _discard_output()
        return EXIT_BROKEN_PIPE


def _discard_output() -> None:
    """Point stdout and stderr at /dev/null: what is still buffered for the closed pipe
    is flushed at exit, and would fail (and print) again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):  # not a real file (a test's capture)
                os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "status" and args.follow and args.job is None:
        parser.error("status --follow needs a JOB")
    try:
        return keys_command(args) if args.command == "keys" else run_command(args)
    except ClientError as exc:
        print(f"virnucctl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("virnucctl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
