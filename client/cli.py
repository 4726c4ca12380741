"""virnucctl: the command line for virnuc.

Commands: ``submit``, ``status``, ``list``, ``wait``, ``kill``, ``workers`` talk to a
running virnucd (found by --state-dir, $VIRNUC_STATE_DIR, $XDG_STATE_HOME/virnuc or
--endpoint; over tcp:// with --curve-server-key and --curve-client-key); ``predict``
starts a private virnucd for one prediction; ``compare-precision`` scores a sample in
fp32 and bf16 (or tf32) on either; ``keys generate`` writes a CURVE key pair.

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
from typing import Any

from virnuc import __version__

from .commands import DEMO_NOTICE, run_command
from .device import AUTO_DEVICE
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
from .keys import keys_command
from .options import (
    add_follow_options,
    add_job_options,
    add_model_options,
    models_mixed,
    positive_float,
    positive_int,
)

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
    """The docstring's exit-code table: ``virnucctl --help``'s epilog."""
    text = __doc__ or ""
    start = text.find("Exit codes")
    return text[start : text.find("\n\n", start)] if start >= 0 else ""


EXIT_CODES_HELP = _exit_codes_help()


def _global_options(top_level: bool, daemon: bool = True) -> argparse.ArgumentParser:
    """The options every command takes, accepted before or after the command name.

    The top-level parser holds the defaults and their help (``virnucctl --help``); each
    command's copy has SUPPRESS as default, so an option given before the command is not
    reset by the command's parser (given in both places, the later one wins), and hidden
    help, so a command's ``--help`` stays short. ``--json`` is the exception: shown in
    every command's help too. ``daemon=False`` (``predict``, which runs its own daemon)
    leaves out where the daemon is, keeping ``--timeout``.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--json",
        action="store_true",
        default=False if top_level else argparse.SUPPRESS,
        help="print the result as JSON (any command; before or after COMMAND)"
        if top_level
        else "print the result as JSON",
    )
    group = parent.add_argument_group("daemon options (before or after COMMAND)")

    def option(*flags: str, default: object = None, text: str, **kwargs: Any) -> None:
        group.add_argument(
            *flags,
            default=default if top_level else argparse.SUPPRESS,
            help=text if top_level else argparse.SUPPRESS,
            **kwargs,
        )

    option(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        default=DEFAULT_TIMEOUT,
        text=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT:g})",
    )
    if not daemon:
        return parent
    option(
        "--state-dir",
        metavar="DIR",
        text="virnucd's state dir (default $VIRNUC_STATE_DIR, else $XDG_STATE_HOME/virnuc)",
    )
    option("--endpoint", metavar="URL", text="control endpoint, e.g. tcp://…")
    option(
        "--events-endpoint",
        metavar="URL",
        text="events endpoint (default: beside an ipc:// control socket, else polling only)",
    )
    option(
        "--curve-server-key",
        metavar="FILE",
        text="the daemon's public CURVE key (server.key), for tcp:// "
        "(default $VIRNUC_CURVE_SERVER_KEY)",
    )
    option(
        "--curve-client-key",
        metavar="FILE",
        text="your secret CURVE key (NAME.key_secret, from `virnucctl keys generate`) "
        "(default $VIRNUC_CURVE_CLIENT_KEY)",
    )
    return parent


#: Each command's epilog, in place of the daemon options and exit codes it used to repeat.
COMMAND_EPILOG = "--json and the daemon options go before or after COMMAND: virnucctl --help"
LOCAL_EPILOG = "--json goes before or after COMMAND; exit codes: virnucctl --help"


class _HelpFormatter(argparse.HelpFormatter):
    """Help in a column wide enough for ``--give-up-after SECONDS``: fewer lines."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=28)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="virnucctl",
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_options(top_level=True)],
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"virnucctl {__version__}",
        help="print virnucctl's version and exit",
    )
    options = _global_options(top_level=False)
    predict_options = _global_options(top_level=False, daemon=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, private: bool = False) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=COMMAND_EPILOG,
            formatter_class=_HelpFormatter,
            parents=[predict_options if private else options],
        )

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
    _add_compare_precision(command("compare-precision", COMPARE_HELP))
    local_options = _json_only()
    _add_keys(commands, local_options)
    _add_report(commands, local_options)
    return parser


def _json_only() -> argparse.ArgumentParser:
    """The commands that read local files only (``report``, ``keys generate``) take
    ``--json`` before or after their name, and no daemon options."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the result as JSON"
    )
    return parent


def _add_report(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    local_options: argparse.ArgumentParser,
) -> None:
    """``report DIR``: reads local files only, so no daemon options."""
    help_text = "write prediction.png and report.html for an existing output directory"
    report = commands.add_parser(
        "report",
        help=help_text,
        description=help_text,
        epilog=LOCAL_EPILOG,
        parents=[local_options],
    )
    report.add_argument("dir", metavar="DIR", help="a complete output directory (--out)")
    report.add_argument(
        "--top", type=positive_int, default=20, metavar="N", help="records to plot (default 20)"
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
    sub.add_argument(
        "--device",
        default=AUTO_DEVICE,
        help="auto, cpu, cuda or cuda:N (default auto: a GPU if torch sees one, else cpu)",
    )
    sub.add_argument(
        "--workers", type=positive_int, default=1, metavar="N", help="worker processes (default 1)"
    )
    sub.add_argument(
        "--config",
        metavar="FILE",
        help="a virnucd config: its model sets ([models.NAME]) only, for --models; "
        "[models.default] serves a predict naming no model",
    )


COMPARE_HELP = "score a sample in fp32 and in bf16 (or tf32); show the calls that change"
COMPARE_SAMPLE = 1000  # records: enough to see a flip rate of 1 % (about 10 of them)
COMPARE_SEED = 1


def _add_compare_precision(sub: argparse.ArgumentParser) -> None:
    """On the user's virnucd, or privately as ``predict`` (client/compare_precision.py)."""
    sub.add_argument("input", metavar="INPUT", help="FASTA/FASTQ file, plain or .gz")
    sub.add_argument(
        "--precision", choices=("bf16", "tf32"), default="bf16", help="against fp32 (default bf16)"
    )
    sub.add_argument(
        "--sample",
        type=positive_int,
        default=COMPARE_SAMPLE,
        metavar="N",
        help=f"records (default {COMPARE_SAMPLE})",
    )
    sub.add_argument(
        "--seed",
        type=int,
        default=COMPARE_SEED,
        metavar="S",
        help=f"sample's seed (default {COMPARE_SEED})",
    )
    sub.add_argument(
        "--work-dir",
        metavar="DIR",
        help="where the sample and outputs go for the run (default $TMPDIR; removed after)",
    )
    add_model_options(sub, precision=False)
    private = sub.add_argument_group("private virnucd, as predict (any of these)")
    private.add_argument("--private", action="store_true", help="run on a private virnucd")
    private.add_argument("--config", metavar="FILE", help="its model sets, as predict --config")
    private.add_argument("--device", help="as predict --device (default auto)")
    private.add_argument("--workers", type=positive_int, metavar="N", help="(default 1)")


def _add_keys(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    local_options: argparse.ArgumentParser,
) -> None:
    """``keys generate``: local files only, so no daemon options."""
    keys = commands.add_parser(
        "keys", help="CURVE key pairs for tcp:// (README: Security)", description=KEYS_HELP
    )
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = actions.add_parser(
        "generate",
        help="write NAME.key (public) and NAME.key_secret (secret, 0600)",
        description=KEYS_HELP,
        epilog=LOCAL_EPILOG,
        parents=[local_options],
    )
    generate.add_argument(
        "--dir", metavar="DIR", help="where to write them (default ~/.config/virnuc/keys)"
    )
    generate.add_argument(
        "--name", default="client", help="file name stem (default client; server for virnucd's)"
    )


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


def _run(args: argparse.Namespace) -> int:
    if args.command == "keys":
        return keys_command(args)
    if args.command == "compare-precision":  # numpy and the input readers: imported here only
        from .compare_precision import compare_precision

        return compare_precision(args)
    return run_command(args)


def _private_run(args: argparse.Namespace) -> bool:
    if args.command == "compare-precision":
        from .compare_precision import is_private

        return is_private(args)
    return bool(args.command == "predict")


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "status" and args.follow and args.job is None:
        parser.error("status --follow needs a JOB")
    if args.command in ("submit", "predict", "compare-precision") and (mixed := models_mixed(args)):
        parser.error(f"--models NAME chooses the models: leave out {mixed}")
    if _private_run(args) and args.models and not args.config:
        parser.error(
            f"{args.command} --models NAME needs --config FILE, a virnucd config with a "
            "[models.NAME] table (a private virnucd has no other)"
        )
    try:
        return _run(args)
    except ClientError as exc:
        print(f"virnucctl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("virnucctl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
