"""How results look on stdout: JSON for scripts, aligned text for people.

``--json`` prints the op's result map unchanged (what the daemon sent, fields this
virnucctl does not know included), so scripts see the documented wire shapes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any


def print_json(result: Mapping[str, Any]) -> None:
    print(json.dumps(result, indent=2, sort_keys=False))


def records(status: Mapping[str, Any]) -> str:
    """``done/total (pct)``; the total is ``?`` until the daemon has planned the input."""
    done, total = status["records_done"], status["records_total"]
    if not total:
        return f"{done}/?"
    return f"{done}/{total} ({100.0 * done / total:.1f}%)"


def frames(status: Mapping[str, Any]) -> str:
    """``12000``, or ``12000 (3100 reused)`` when a worker reused some frames' rows
    from identical frames of the job (duplicate reads) instead of computing them."""
    reused = status.get("frames_reused")
    if not reused:
        return str(status["frames_done"])
    return f"{status['frames_done']} ({reused} reused)"


def state_text(status: Mapping[str, Any]) -> str:
    """The job's state; a queued one's with its place in the queue, ``queued (position
    3)``, from a virnucd that says it (1 = the next to start)."""
    position = status.get("queue_position")
    if status["state"] == "queued" and position is not None:
        return f"queued (position {position})"
    return str(status["state"])


def job_lines(status: Mapping[str, Any]) -> str:
    """One job, one ``field: value`` line each, for ``virnucctl status JOB``."""
    rows = [
        ("job", status["job_id"]),
        ("state", state_text(status)),
        ("records", records(status)),
        ("frames", frames(status)),
        ("restarts", status["restarts"]),
    ]
    rows += [(_LABELS.get(key, key), status[key]) for key in _OPTIONAL_FIELDS if status.get(key)]
    inputs = status.get("inputs") or []
    if len(inputs) > 1:  # one line per file, after the first (`input`)
        at = next(i for i, (key, _) in enumerate(rows) if key == "input") + 1
        rows[at:at] = [("", path) for path in inputs[1:]]
    return "\n".join(f"{key + ':' if key else '':<{_LABEL_WIDTH}}{value}" for key, value in rows)


_OPTIONAL_FIELDS = ("model_set", "precision", "input", "output", "waiting", "error")
#: A field's label where it is not the field's name.
_LABELS = {"model_set": "models"}
#: The longest label, its colon and a space: every value starts in the same column.
_LABEL_WIDTH = max(len(_LABELS.get(key, key)) for key in _OPTIONAL_FIELDS) + 2


def jobs_table(jobs: Sequence[Mapping[str, Any]]) -> str:
    """``virnucctl list``: one row per job, oldest first, as the daemon lists them."""
    if not jobs:
        return "no jobs"
    header = (
        "JOB",
        "STATE",
        "RECORDS",
        "FRAMES",
        "RESTARTS",
        "SUBMITTED",
        "ENDED",
        "OUTPUT / ERROR",
    )
    rows = [
        (
            j["job_id"],
            state_text(j),
            records(j),
            j["frames_done"],
            j["restarts"],
            local_time(j.get("submitted_at")),
            local_time(j.get("finished_at")),
            j.get("error")
            or (j.get("waiting") and f"waiting: {j['waiting']}")
            or j.get("output")
            or "",
        )
        for j in jobs
    ]
    return table(header, rows)


def local_time(unix_time: float | None) -> str:
    """``2026-12-06 14:02`` in the local time zone; ``-`` when the daemon did not say
    (an unfinished job's end, or an older virnucd)."""
    if unix_time is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix_time))


def workers_table(workers: Sequence[Mapping[str, Any]]) -> str:
    """``virnucctl workers``: id, pid, device, state, current job and unit."""
    if not workers:
        return "no workers"
    header = ("ID", "PID", "DEVICE", "STATE", "JOB", "UNIT")
    rows = [
        (
            w["id"],
            _blank(w.get("pid")),
            w["device"],
            w["state"],
            _blank(w.get("job_id")),
            _blank(w.get("unit")),
        )
        for w in workers
    ]
    return table(header, rows)


def _blank(value: object) -> object:
    return "-" if value is None else value


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)
