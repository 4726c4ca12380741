"""Who may talk to virnucd, without a daemon: a private state dir and sockets (the keys
`virnucctl keys generate` writes: tests/client/test_keys.py; tests/e2e/test_access.py
asks a real virnucd)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import zmq

from virnuc.daemon import access
from virnuc.daemon.main import StateDirBusy, claim_state_dir

from tests.support.file_modes import mode


def test_an_existing_state_dir_is_made_private(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o777)
    os.chmod(state_dir, 0o777)
    lock = claim_state_dir(state_dir)
    lock.close()
    assert mode(state_dir) == 0o700


def test_with_a_group_the_state_dir_is_0710_and_sockets_0660(tmp_path: Path) -> None:
    """Members pass through to the sockets but cannot list the dir."""
    gid = os.getgid()
    state_dir = tmp_path / "state"
    access.prepare_state_dir(state_dir, gid)
    assert (mode(state_dir), state_dir.stat().st_gid) == (0o710, gid)
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        access.Listener(gid).bind(sock, f"ipc://{state_dir}/control.sock")
        control = state_dir / "control.sock"
        assert (mode(control), control.stat().st_gid) == (0o660, gid)
    finally:
        sock.close()
        context.term()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a dir to another user")
def test_a_state_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    os.chown(state_dir, 65534, 65534)
    with pytest.raises(StateDirBusy, match="belongs to"):
        claim_state_dir(state_dir)
    assert mode(state_dir) == 0o700  # refused, not "fixed"


def test_what_an_older_virnucd_left_readable_is_made_private(tmp_path: Path) -> None:
    database, jobs = tmp_path / "virnuc.db", tmp_path / "jobs"
    for path in (database, tmp_path / "virnuc.db-wal", tmp_path / "virnuc.db-shm"):
        path.write_bytes(b"")
        path.chmod(0o644)
    (jobs / "job1").mkdir(parents=True)
    jobs.chmod(0o755)
    access.restrict_existing(database, jobs)
    assert mode(database) == mode(tmp_path / "virnuc.db-wal") == 0o600
    assert mode(tmp_path / "virnuc.db-shm") == 0o600
    assert mode(jobs) == 0o700


def test_a_fresh_state_dir_has_no_files_to_make_private(tmp_path: Path) -> None:
    access.restrict_existing(tmp_path / "virnuc.db", tmp_path / "jobs")  # nothing raised
    assert list(tmp_path.iterdir()) == []


def test_binding_under_the_private_umask_never_widens_it(tmp_path: Path) -> None:
    """The socket's umask keeps PRIVATE_UMASK's group and other bits: a file created by
    another thread meanwhile is private too."""
    previous = os.umask(access.PRIVATE_UMASK)
    try:
        with access.private_umask(os.getgid()):
            (tmp_path / "meanwhile").write_bytes(b"")
        assert os.umask(access.PRIVATE_UMASK) == access.PRIVATE_UMASK  # restored
    finally:
        os.umask(previous)
    assert mode(tmp_path / "meanwhile") == 0o600
