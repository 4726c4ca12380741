"""Who may see and do what: the rules the handlers apply to an authenticated `Caller`.

Everyone (that ZAP let in) may ping, submit and list, see and kill their own jobs.
A job of another owner is answered exactly like one that does not exist, so job ids
cannot be probed. Admins (root, virnucd's user, `admin_group`, admin keys) see every
job, and only they may stop virnucd. `workers` shows everyone the slots (state,
device, pid), but which job and unit a slot computes only to those who may see the job.
"""

from __future__ import annotations

import os

from virnuc.protocol import WorkerInfo

from .caller import Caller, describe_user


def owner_filter(caller: Caller) -> str | None:
    """The owner whose jobs `list` shows the caller; None (every job) for an admin."""
    return None if caller.admin else caller.owner


def worker_view(info: WorkerInfo, caller: Caller, job_owner: str | None) -> WorkerInfo:
    """`info` as `caller` may see it: without the job it computes when that job is of
    another owner (`job_owner` None: unknown, so hidden from non-admins too)."""
    if "job_id" not in info or caller.may_see(job_owner):
        return info
    view = info.copy()
    view.pop("job_id", None)
    view.pop("unit", None)
    return view


def shutdown_forbidden(admin_group: str | None) -> str:
    """Why a non-admin may not stop virnucd, naming who may."""
    group = (
        f"members of admin_group {admin_group}"
        if admin_group
        else "members of admin_group (none set)"
    )
    return (
        f"only an admin may stop virnucd (root, virnucd's user {describe_user(os.geteuid())}, "
        f"{group}, or holders of an admin key)"
    )
