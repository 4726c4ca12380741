"""virnucctl's exit codes, its exceptions, and the one table mapping daemon errors to codes.

Scripts branch on the exit status, so the codes are a contract (listed in
``virnucctl --help``). Every expected failure becomes a ``ClientError`` with its exit
code, caught once in ``cli.main`` and printed as ``virnucctl: error: ...``; only a
bug in virnucctl itself ends in a traceback.
"""

from __future__ import annotations

from virnuc.protocol import ErrorCode, ProtocolError, RemoteError

EXIT_OK = 0
EXIT_FAILED = 1  # the job failed or was killed, or an unexpected error
EXIT_USAGE = 2  # bad command-line options (argparse's own code)
EXIT_UNREACHABLE = 3  # no answer from virnucd
EXIT_INVALID_INPUT = 4  # invalid_input, not_found, conflict, forbidden
EXIT_STOPPING = 5  # try later: the daemon is shutting down, or its state disk is full
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
EXIT_BROKEN_PIPE = 141  # stdout closed early (`| head`): 128 + SIGPIPE, as for `cat`

#: Daemon error codes that are the user's to fix (the message names the file, job or
#: directory) or that say "try later". Anything else (bad_request, unknown_op,
#: unsupported_version, too_large, internal) means virnucctl and virnucd disagree or
#: the daemon has a bug: EXIT_FAILED.
_EXIT_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.INVALID_INPUT: EXIT_INVALID_INPUT,
    ErrorCode.NOT_FOUND: EXIT_INVALID_INPUT,
    ErrorCode.CONFLICT: EXIT_INVALID_INPUT,
    ErrorCode.FORBIDDEN: EXIT_INVALID_INPUT,
    ErrorCode.STOPPING: EXIT_STOPPING,
    ErrorCode.NO_SPACE: EXIT_STOPPING,
}


class ClientError(Exception):
    """An expected failure of a command: printed without a traceback, then exit."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class DaemonUnreachable(ClientError):
    """Raised by ``DaemonClient.call`` when virnucd does not answer in time.

    ``advice`` is filled in by whoever knows how the endpoint was chosen (the CLI),
    so the message can say which state dir was looked at and how to start virnucd.
    """

    exit_code = EXIT_UNREACHABLE

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.advice = ""

    def __str__(self) -> str:
        return f"{self.message} — {self.advice}" if self.advice else self.message


class NoAnswer(DaemonUnreachable):
    """No reply within the timeout: virnucd may be paused or busy, so asking again can
    help (``wait`` does), unlike a missing or stale socket file."""


class JobEnded(ClientError):
    """The followed job ended as failed or killed; ``status`` is its last status."""

    def __init__(self, message: str, status: dict[str, object]) -> None:
        super().__init__(message, job_exit_code(status))
        self.status = status


def job_exit_code(status: dict[str, object]) -> int:
    """A job that failed for a reason that is the user's to fix (its `error_code`,
    e.g. `invalid_input`) exits as a request refused for it would; any other failure,
    and a kill, exits 1."""
    try:
        return exit_code_for(ErrorCode(str(status.get("error_code"))))
    except ValueError:
        return EXIT_FAILED


def exit_code_for(code: ErrorCode) -> int:
    """The exit status for a daemon error code (the single mapping table)."""
    return _EXIT_BY_CODE.get(code, EXIT_FAILED)


def from_protocol_error(exc: ProtocolError, endpoint: str) -> ClientError:
    """Turn a daemon's error reply, or a malformed reply, into a ClientError.

    The daemon's message is printed as is: it names the file, record or job.
    """
    if isinstance(exc, RemoteError):
        if exc.code in _EXIT_BY_CODE:  # the user's to act on: the message says what
            return ClientError(exc.message, exit_code_for(exc.code))
        return ClientError(f"virnucd answered {exc.code}: {exc.message}", exit_code_for(exc.code))
    return ClientError(f"malformed reply from virnucd at {endpoint}: {exc}", EXIT_FAILED)
