"""daemon/slots/keys.py: the worker socket's CURVE keys, made once and private."""

from __future__ import annotations

from pathlib import Path

from zmq.auth import load_certificate

from virnuc.daemon.slots.keys import load_or_create
from virnuc.protocol.constants import WORKER_CURVE_ENV

from tests.support.file_modes import mode


def test_keys_are_made_once_private_and_the_socket_admits_only_the_pilots(
    tmp_path: Path,
) -> None:
    keys_dir = tmp_path / "worker-keys"
    first = load_or_create(keys_dir)
    again = load_or_create(keys_dir)

    assert again == first  # made on first use, read back after
    assert mode(keys_dir) == 0o700
    assert mode(keys_dir / "server.key_secret") == 0o600
    assert mode(keys_dir / "worker.key_secret") == 0o600
    assert [p.name for p in (keys_dir / "allowed").iterdir()] == ["worker.key"]
    assert load_certificate(keys_dir / "allowed" / "worker.key")[0] == first.worker_public


def test_the_pilots_environment_carries_the_sockets_public_key_and_the_pilots_pair(
    tmp_path: Path,
) -> None:
    keys = load_or_create(tmp_path / "worker-keys")
    env = keys.environment()

    assert list(env) == [WORKER_CURVE_ENV]
    assert env[WORKER_CURVE_ENV].split(" ") == [
        keys.server.public.decode(),
        keys.worker_public.decode(),
        keys.worker_secret.decode(),
    ]
