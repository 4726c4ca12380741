"""``virnucctl keys generate``: CURVE key pairs for talking to virnucd over tcp://.

A pair is two files in ZeroMQ's certificate format (``zmq.auth``): ``NAME.key``
holds the public key, to be shared; ``NAME.key_secret`` holds both keys and is
created 0600, never wider, since whoever has it can act as its owner.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from zmq.auth import create_certificates

from .errors import EXIT_OK, ClientError
from .output import print_json


def default_keys_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/virnuc/keys``, else ``~/.config/virnuc/keys``."""
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "virnuc" / "keys"


@contextmanager
def _private_files() -> Iterator[None]:
    """Files created meanwhile are 0600 from their first byte (no chmod race)."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def generate(directory: Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key (0644) and NAME.key_secret (0600); never overwrite a key."""
    if not name or "/" in name or name.startswith("."):
        raise ClientError(f"--name must be a plain file name, not {name!r}")
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    existing = [str(p) for p in (public, secret) if p.exists()]
    if existing:
        raise ClientError(
            f"{' and '.join(existing)} already exist; keep using them, or remove them "
            "first (clients or daemons using the old pair then need the new one)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _private_files():
            create_certificates(directory, name)
        os.chmod(secret, 0o600)
        os.chmod(public, 0o644)
    except OSError as exc:
        raise ClientError(f"cannot write keys into {directory}: {exc}") from exc
    return public, secret


def next_steps(public: Path, secret: Path, name: str) -> str:
    """What to do with the pair just written; a server pair is used differently."""
    if name == "server":
        return (
            "next: in virnucd's config set `curve = true` (and curve_server_key if this\n"
            f"      is not STATE_DIR/curve/server.key_secret), restart virnucd, and give\n"
            f"      {public} to each client (for --curve-server-key)."
        )
    return (
        "next: copy the public key into the daemon's curve_allow_dir, e.g.\n"
        f"        cp {public} STATE_DIR/curve/clients/$USER-$(hostname).key\n"
        "      then connect with\n"
        "        virnucctl --endpoint tcp://HOST:PORT --curve-server-key server.key \\\n"
        f"            --curve-client-key {secret} workers\n"
        "      (or export VIRNUC_CURVE_SERVER_KEY and VIRNUC_CURVE_CLIENT_KEY).\n"
        "      The daemon's own pair: virnucctl keys generate --dir STATE_DIR/curve --name server"
    )


def keys_command(args: argparse.Namespace) -> int:
    """``virnucctl keys generate [--dir DIR] [--name NAME] [--json]``."""
    directory = Path(args.dir).expanduser() if args.dir else default_keys_dir()
    public, secret = generate(directory.absolute(), args.name)
    if args.json:
        print_json({"public_key_file": str(public), "secret_key_file": str(secret)})
        return EXIT_OK
    print(f"wrote the CURVE key pair {args.name!r}:")
    print(f"  public  {public}  (share it)")
    print(f"  secret  {secret}  (mode 0600; never share it)")
    print(next_steps(public, secret, args.name))
    return EXIT_OK
