"""The CURVE keys of the worker socket when it is reachable from the network.

A Slurm pilot connects from another node over tcp://, where file permissions protect
nothing, and a stranger on the worker socket could forge checkpoints. So virnucd
binds it with CURVE and makes two key pairs itself, once, in `worker_keys_dir` (0700,
files 0600): the socket's, and the one pilots use, whose public key is the only one
the socket admits. Pilots get theirs through their environment (`WORKER_CURVE_ENV`),
which sbatch hands to the job and no other user can read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq.auth

from virnuc.protocol.constants import WORKER_CURVE_ENV

from ..access import CurveServer


@dataclass(frozen=True)
class WorkerKeys:
    server: CurveServer
    worker_public: bytes
    worker_secret: bytes

    def environment(self) -> dict[str, str]:
        """What a pilot needs to connect: the socket's public key and its own pair."""
        keys = (self.server.public, self.worker_public, self.worker_secret)
        return {WORKER_CURVE_ENV: " ".join(key.decode() for key in keys)}


def load_or_create(keys_dir: Path) -> WorkerKeys:
    """The worker socket's keys, made on first use."""
    allowed = keys_dir / "allowed"
    if not (keys_dir / "worker.key_secret").exists():
        _create(keys_dir, allowed)
    server = CurveServer.load(keys_dir / "server.key_secret", allowed)
    public, secret = zmq.auth.load_certificate(keys_dir / "worker.key_secret")
    assert secret is not None  # a .key_secret file holds both halves
    return WorkerKeys(server, public, secret)


def _create(keys_dir: Path, allowed: Path) -> None:
    old_umask = os.umask(0o077)  # never a moment with a readable secret key
    try:
        allowed.mkdir(parents=True, exist_ok=True)
        zmq.auth.create_certificates(keys_dir, "server")
        public_file, _ = zmq.auth.create_certificates(keys_dir, "worker")
        os.replace(public_file, allowed / "worker.key")
    finally:
        os.umask(old_umask)
