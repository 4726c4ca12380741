"""A done job's report drawn in a child process at the lowest CPU priority.

Drawing `prediction.png` costs about two seconds of CPU, mostly matplotlib's layout.
In virnucd's own process that work ran at virnucd's priority, above the workers' (they
run at `worker_nice`), and shared the interpreter lock with its event loop, so the
report of one job slowed the next job's units and the daemon's answers. A child at
nice 19 draws only on CPU time nobody else wants, and keeps matplotlib out of virnucd.

The parent passes the output directory it opened again (its descriptor, kept at the
same number in the child, so `/proc/self/fd/N` names the same directory there); the
child writes the report through it with `pipeline.report.write_report`, and says why
on stderr if it cannot. Given what ran (`run`: `pipeline.run_info.build_run_info`'s
arguments), it first writes `run_info.json` there, whose model checksums are also
computed here at nice 19 (a local ESM checkpoint is gigabytes), and shows it.

    python -m virnuc.daemon.jobs.report_process DIR SHOWN_AS RUN_INFO_JSON [RUN_JSON]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

LOWEST_PRIORITY = 19


class ReportFailed(RuntimeError):
    """The child could not write the report; the message is its own reason."""


def write_report(
    out: Path, *, run_info: dict[str, Any], shown_as: Path, run: dict[str, Any] | None = None
) -> None:
    """Write `out`'s report (as `pipeline.report.write_report` does) in a child process
    at nice 19, and `run_info.json` first when `run` is given; returns when they are
    written, raises `ReportFailed` saying why not."""
    fds = _descriptor_in(str(out))
    command = [sys.executable, "-m", __name__, str(out), str(shown_as), json.dumps(run_info)]
    if run is not None:
        command.append(json.dumps(run))
    done = subprocess.run(command, pass_fds=fds, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise ReportFailed(reason)


def _descriptor_in(path: str) -> tuple[int, ...]:
    """The descriptor a `/proc/self/fd/N` path names, for the child to inherit."""
    prefix = "/proc/self/fd/"
    if path.startswith(prefix) and path[len(prefix) :].isdigit():
        return (int(path[len(prefix) :]),)
    return ()


def main(argv: list[str]) -> int:
    out, shown, info = Path(argv[0]), argv[1], json.loads(argv[2])
    os.setpriority(os.PRIO_PROCESS, 0, LOWEST_PRIORITY)
    # Imported after lowering the priority: the imports are most of a small job's cost.
    from virnuc.pipeline.report import write_report as draw
    from virnuc.pipeline.run_info import build_run_info, write_run_info

    try:
        if len(argv) > 3:
            recorded = build_run_info(**json.loads(argv[3]))
            write_run_info(out, recorded)
            info = {**recorded, **info}
        draw(out, run_info=info, shown_as=Path(shown))
    except Exception as exc:
        # The user reads this: name their directory, never the opened one's fd path.
        print(f"{type(exc).__name__}: {exc}".replace(str(out), shown), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
