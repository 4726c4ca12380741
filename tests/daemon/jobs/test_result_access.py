"""daemon/jobs/result_access.py: published results are their owner's to read and edit."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from virnuc.daemon.caller import user_owner
from virnuc.daemon.jobs.result_access import SHARED_MODE, hand_over

from tests.support.unix_users import UnixUsers


def private_file(directory: Path, name: str, text: str = "results\n") -> Path:
    path = directory / name
    path.write_text(text)
    path.chmod(0o600)  # as virnucd's private umask leaves it
    return path


def test_another_owner_may_read_and_edit_results_in_her_own_directory(
    unix_users: UnixUsers,
) -> None:
    users, alice = unix_users, unix_users.alice
    home = users.home(alice)
    home.chmod(0o777)  # lets virnucd (root here) write, as virnucd's group would
    result = private_file(home, "prediction_results.txt")
    hand_over(str(home), ["prediction_results.txt"], user_owner(alice.uid))
    edit = f"print(open({str(result)!r}).read(), end=''); open({str(result)!r}, 'a').write('x')"
    done = users.python_as(alice, edit)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "results\n"
    assert users.python_as(users.bob, f"open({str(result)!r})").returncode != 0  # only hers


def test_a_name_swapped_for_a_symlink_is_not_followed(unix_users: UnixUsers) -> None:
    users, alice = unix_users, unix_users.alice
    home = users.home(alice)
    secret = private_file(users.base, "virnucd-secret.db")
    (home / "swapped.txt").symlink_to(secret)
    hand_over(str(home), ["swapped.txt"], user_owner(alice.uid))
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert not os.listxattr(secret)
    assert users.python_as(alice, f"open({str(secret)!r})").returncode != 0


def test_results_of_virnucds_own_user_become_world_readable(tmp_path: Path) -> None:
    result = private_file(tmp_path, "report.html")
    hand_over(str(tmp_path), ["report.html", "absent.png"], user_owner(os.geteuid()))
    assert stat.S_IMODE(result.stat().st_mode) == SHARED_MODE
