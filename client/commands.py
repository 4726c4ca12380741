"""What each virnucctl command does, one function per command.

Each function takes the parsed options and a connected ``DaemonClient`` and returns
the exit status; expected failures are raised as ``ClientError`` (see errors.py) and
printed by ``cli.main``. stdout carries only results (a job id, a table, JSON);
progress and notices go to stderr, so ``JOB=$(virnucctl submit ...)`` works.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from virnuc.protocol import JobState, KillArgs, ListArgs, StatusArgs, SubmitArgs, WorkersArgs

from .connection import CurveKeys, DaemonAddress, DaemonClient
from .device import choose_device
from .errors import EXIT_INVALID_INPUT, EXIT_OK, ClientError, DaemonUnreachable, JobEnded
from .follow import GIVE_UP_AFTER, follow_job
from .output import job_lines, jobs_table, print_json, workers_table
from .private_daemon import PrivateDaemon, read_model_sets, signals_interrupt
from .progress import ProgressLine

DEMO_NOTICE = (
    "NOTE: the demo profile uses tiny random models; its predictions are meaningless.\n"
    "      For real predictions pass the published weights: --classifier 300_model.pth\n"
    "      (or 500_model.pth with --chunk-length 500), and optionally\n"
    "      --esm NAME|FILE and --dnabert ID|DIR."
)

#: Jobs per ``list`` request: far below the 4 MiB message limit (a JobStatus is a
#: few hundred bytes), so a daemon with a long history never answers ``too_large``.
LIST_PAGE = 500

Command = Callable[[argparse.Namespace, DaemonClient], int]


def run_command(args: argparse.Namespace) -> int:
    """Connect to the daemon the options name and run the command against it."""
    if args.command == "predict":
        return predict(args)
    if args.command == "report":
        return report(args)
    address = DaemonAddress.resolve(args.state_dir, args.endpoint, args.events_endpoint)
    curve = CurveKeys.from_options(args.curve_server_key, args.curve_client_key)
    with DaemonClient(address.control, address.events, args.timeout, curve=curve) as client:
        try:
            return COMMANDS[args.command](args, client)
        except DaemonUnreachable as e:
            e.advice = address.advice()
            raise


# --- submit and predict: building the request -------------------------------------------


def absolute(path: str) -> str:
    """The daemon's working directory is not ours: send every path absolute."""
    return os.path.abspath(os.path.expanduser(path))


def model_ref(value: str | None) -> str | None:
    """``--esm NAME|FILE``, ``--dnabert ID|DIR``: make a local path absolute, keep a name.

    A value is a path when it exists here, starts like one (``/``, ``./``, ``../``,
    ``~``) or names a ``.pt`` file; otherwise it is a model name or hub id
    (``zhihan1996/DNABERT-S`` has a slash but is not a path unless it exists).
    """
    if value is None:
        return None
    expanded = os.path.expanduser(value)
    looks_like_path = value.startswith(("/", "./", "../", "~")) or value.endswith(".pt")
    if looks_like_path or os.path.exists(expanded):
        return absolute(value)
    return value


def submit_args(args: argparse.Namespace) -> SubmitArgs:
    """The ``submit`` request for ``virnucctl submit`` and ``virnucctl predict``. One
    input goes as ``input``, which every virnucd understands; several as ``inputs``."""
    paths = [absolute(path) for path in args.inputs]
    return SubmitArgs(
        input=paths[0] if len(paths) == 1 else None,
        inputs=paths if len(paths) > 1 else None,
        output=absolute(args.out),
        models=args.models,
        profile=args.profile,
        esm=model_ref(args.esm),
        dnabert=model_ref(args.dnabert),
        classifier=absolute(args.classifier) if args.classifier else None,
        chunk_length=args.chunk_length,
        precision=args.precision,
        save_embeddings=args.save_embeddings,
        checkpoint_every=args.checkpoint_every,
        force=args.force,
    )


def demo_notice(args: argparse.Namespace) -> None:
    if args.profile == "demo":
        print(DEMO_NOTICE, file=sys.stderr)


# --- following a job ---------------------------------------------------------------------


def follow_with_bar(
    client: DaemonClient, job_id: str, give_up_after: float = GIVE_UP_AFTER
) -> dict[str, Any]:
    """Show a live progress bar on stderr until the job ends; its final status."""
    bar = ProgressLine()
    try:
        status = follow_job(
            client, job_id, bar.show, give_up_after=give_up_after, on_notice=bar.note
        )
        bar.show(status, force=True)
    finally:
        bar.close()
    return status


def check_done(status: dict[str, Any]) -> None:
    """Raise ``JobEnded`` (exit 1) unless the job is done."""
    job_id, state = status["job_id"], status["state"]
    if state == JobState.FAILED:
        raise JobEnded(f"job {job_id} failed: {status.get('error') or 'no reason given'}", status)
    if state != JobState.DONE:
        raise JobEnded(f"job {job_id} was {state}", status)


def wait_for(client: DaemonClient, job_id: str, args: argparse.Namespace) -> int:
    """Follow the job; 0 when done, ``JobEnded`` (exit 1) when failed or killed."""
    as_json = args.json
    status = follow_with_bar(client, job_id, args.give_up_after)
    if as_json:
        print_json(status)
    check_done(status)
    if not as_json:
        print(f"job {job_id} done: {_summary(status)}", file=sys.stderr)
    return EXIT_OK


def _summary(status: dict[str, Any]) -> str:
    where = f" -> {status['output']}" if status.get("output") else ""
    return f"{status['records_done']} records, {status['frames_done']} frames{where}"


# --- the commands ------------------------------------------------------------------------


def submit(args: argparse.Namespace, client: DaemonClient) -> int:
    """``virnucctl submit INPUT --out DIR [...] [--wait]``: print the new job's id.

    With ``--wait`` the id is printed (flushed) first, then it behaves like ``wait``;
    with ``--json --wait`` the one JSON document printed is the final status.
    """
    demo_notice(args)
    result = client.call(submit_args(args))
    job_id = result["job_id"]
    if args.json and not args.wait:
        print_json(result)
    elif not args.json:
        print(job_id, flush=True)
    return wait_for(client, job_id, args) if args.wait else EXIT_OK


def status(args: argparse.Namespace, client: DaemonClient) -> int:
    """``virnucctl status [JOB] [--follow]``: one job, or every job like ``list``."""
    if args.job is None:
        return list_jobs(args, client)
    if args.follow:
        result = follow_with_bar(client, args.job, args.give_up_after)
    else:
        result = client.call(StatusArgs(args.job))
    if args.json:
        print_json(result)
    else:
        print(job_lines(result))
    return EXIT_OK


def fetch_all_jobs(client: DaemonClient) -> dict[str, Any]:
    """Every job, oldest first, page by page; shaped like an unpaged ``list`` result."""
    jobs: list[Any] = []
    total: int | None = None
    while True:
        page = client.call(ListArgs(offset=len(jobs), limit=LIST_PAGE))
        jobs.extend(page["jobs"])
        total = page.get("total", total)
        if len(page["jobs"]) < LIST_PAGE or (total is not None and len(jobs) >= total):
            break
    return {"jobs": jobs} if total is None else {"jobs": jobs, "total": total}


def list_jobs(args: argparse.Namespace, client: DaemonClient) -> int:
    """``virnucctl list``: every job the daemon knows, oldest first."""
    result = fetch_all_jobs(client)
    if args.json:
        print_json(result)
    else:
        print(jobs_table(result["jobs"]))
    return EXIT_OK


def wait(args: argparse.Namespace, client: DaemonClient) -> int:
    """``virnucctl wait JOB``: progress until the job ends; exit 0 done, 1 failed/killed."""
    return wait_for(client, args.job, args)


def kill(args: argparse.Namespace, client: DaemonClient) -> int:
    """``virnucctl kill JOB``: stop the job's units and mark it killed."""
    result = client.call(KillArgs(args.job))
    if args.json:
        print_json(result)
    else:
        print(f"job {result['job_id']} {result['state']}")
    return EXIT_OK


def workers(args: argparse.Namespace, client: DaemonClient) -> int:
    """``virnucctl workers``: each worker slot's pid, device, state and current unit."""
    result = client.call(WorkersArgs())
    if args.json:
        print_json(result)
    else:
        print(workers_table(result["workers"]))
    return EXIT_OK


def predict(args: argparse.Namespace) -> int:
    """``virnucctl predict INPUT --out DIR [...]``: a whole prediction on a private daemon,
    on the device ``--device`` names (``auto``: the GPU if torch sees one; device.py).

    With ``--json`` the job's final status is printed (it carries ``output``,
    ``records_done`` and ``frames_done``, as the in-process predict did).
    """
    demo_notice(args)
    request = submit_args(args)
    model_sets = read_model_sets(args.config) if args.config else ""
    device = choose_device(args.device)
    daemon = PrivateDaemon(device, args.workers, args.checkpoint_every, args.timeout, model_sets)
    with signals_interrupt(), daemon as client:
        job_id = client.call(request)["job_id"]
        final = follow_with_bar(client, job_id)
        if args.json:
            print_json(final)
        check_done(final)  # inside the block: a failed job shows the daemon's log
    if not args.json:
        print(
            f"done: {final['records_done']} records, {final['frames_done']} frames -> "
            f"{request.output}"
        )
    return EXIT_OK


def report(args: argparse.Namespace) -> int:
    """``virnucctl report DIR [--top N]``: prediction.png and report.html beside the outputs.

    Local files only (no daemon); what the outputs do not record (inputs, models,
    precision, time) comes from the directory's run_info.json, else shows as
    "not recorded". Exit 4 when DIR holds no complete outputs.
    """
    from virnuc.pipeline.report import MAX_TOP, ReportError, write_report  # no torch

    if args.top > MAX_TOP:
        raise ClientError(f"--top must be at most {MAX_TOP}", EXIT_INVALID_INPUT)
    try:
        summary = write_report(Path(args.dir), top=args.top)
    except (ReportError, PermissionError) as exc:
        raise ClientError(str(exc), EXIT_INVALID_INPUT) from None
    except OSError as exc:
        raise ClientError(f"cannot write the report in {args.dir}: {exc}") from None
    if args.json:
        print_json(summary.as_dict())
    else:
        calls = ", ".join(f"{n} {label}" for label, n in sorted(summary.calls.items()))
        print(f"{summary.records} records ({calls}), {summary.frames} frames")
        print(summary.plot)
        print(summary.report)
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "submit": submit,
    "status": status,
    "list": list_jobs,
    "wait": wait,
    "kill": kill,
    "workers": workers,
}
