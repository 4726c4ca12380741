"""Numbers and names that both ends of every virnuc socket must agree on.

That includes where virnucd listens: the socket file names in its state dir, the
default state dir, and which endpoints need CURVE.

Every key that appears on the wire is named here once, so a typo is a NameError
instead of a silently missing field, and grepping for a key finds every user.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Final

#: The version every message carries in its ``v`` key. A peer that sees another
#: number answers ``unsupported_version`` (requests) or drops the message (events,
#: worker messages); it never guesses at a newer layout.
PROTOCOL_VERSION: Final = 1

#: Default upper bound on one payload frame, in bytes. Larger requests get a
#: ``too_large`` reply; a daemon may also configure ZeroMQ to drop far larger ones.
MAX_MESSAGE_SIZE: Final = 4 * 1024 * 1024

#: Deepest container nesting a decoded message may have. Real messages need about
#: five levels; the bound keeps a hostile payload from exhausting the recursion
#: limit of whatever later walks it (logging, JSON output).
MAX_DEPTH: Final = 32

#: Longest request id the daemon accepts; ids are echoed back and logged.
MAX_REQUEST_ID_LEN: Final = 128

#: The precisions a job's models may run in (``submit``'s ``precision``); the same
#: values as ``virnuc.pipeline.spec.PRECISIONS``, which a test holds them to.
PRECISIONS: Final = ("fp32", "tf32", "bf16")

# --- where virnucd listens: file names inside its state dir --------------------------
CONTROL_SOCKET: Final = "control.sock"
EVENTS_SOCKET: Final = "events.sock"
WORKERS_SOCKET: Final = "workers.sock"
#: How a pilot gets the worker socket's CURVE keys: "SERVER_PUBLIC OWN_PUBLIC OWN_SECRET"
#: (Z85), in its environment, so no key shows on a command line.
WORKER_CURVE_ENV: Final = "VIRNUC_WORKER_CURVE"


def socket_file(endpoint: str) -> Path | None:
    """The file an ipc:// endpoint binds; None for tcp:// and abstract ipc://@name."""
    if endpoint.startswith("ipc://") and not endpoint.startswith("ipc://@"):
        return Path(endpoint[len("ipc://") :])
    return None


def needs_curve(endpoint: str) -> bool:
    """True for endpoints that file permissions cannot protect."""
    return socket_file(endpoint) is None


def default_state_dir(env: Mapping[str, str]) -> tuple[Path, str]:
    """virnucd's default state dir and where that choice came from (for messages)."""
    if env.get("VIRNUC_STATE_DIR"):
        return Path(env["VIRNUC_STATE_DIR"]), "$VIRNUC_STATE_DIR"
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "virnuc", "$XDG_STATE_HOME/virnuc"
    return Path.home() / ".local" / "state" / "virnuc", "the default"


# --- keys of the control envelope (docs/architecture.md §3) -------------------------------------
KEY_VERSION: Final = "v"
KEY_ID: Final = "id"
KEY_OP: Final = "op"
KEY_ARGS: Final = "args"
KEY_OK: Final = "ok"
KEY_RESULT: Final = "result"
KEY_ERROR: Final = "error"
KEY_CODE: Final = "code"
KEY_MESSAGE: Final = "message"

#: Discriminator of event bodies and daemon<->worker messages.
KEY_TYPE: Final = "type"

#: Id used in a reply to a request whose own id could not be read.
UNKNOWN_REQUEST_ID: Final = ""
