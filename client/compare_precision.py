"""``virnucctl compare-precision INPUT``: how often a reduced precision changes a call.

It runs where the user's jobs run: a sample of INPUT (client/sample_input.py) is
scored twice, as two ordinary jobs on the same models, in fp32 and in the reduced
precision (bf16 by default). By default they go to the user's virnucd, as `submit`
sends them (so on a GPU server they use its GPUs and fair share, and virnucd reads
the sample with the caller's rights, as any job's input); with `--private`,
`--config`, `--device` or `--workers` they run on a private virnucd, as `predict`
runs. The two jobs' outputs are then compared (client/precision_diff.py).

The sample and both outputs live in a private work dir (client/work_dir.py: 0700,
the sample 0600; a shared server's virnucd let in by an ACL naming its user alone)
that is removed whatever happens, Ctrl-C included; unfinished jobs are killed first.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from virnuc.protocol import KillArgs, SubmitArgs

from .commands import check_done, demo_notice, follow_with_bar, submit_args
from .connection import CurveKeys, DaemonAddress, DaemonClient
from .device import AUTO_DEVICE, choose_device
from .errors import EXIT_INVALID_INPUT, EXIT_OK, ClientError, DaemonUnreachable
from .output import print_json
from .precision_diff import Comparison, ComparisonError, compare_output_dirs
from .private_daemon import PrivateDaemon, read_model_sets, signals_interrupt
from .sample_input import Sample, sample_records, write_fasta
from .work_dir import SAMPLE_NAME, share_with_daemon, work_dir

REFERENCE = "fp32"


def is_private(args: argparse.Namespace) -> bool:
    """Asked the way `predict` is: on a private virnucd."""
    return bool(args.private or args.config or args.device or args.workers)


def compare_precision(args: argparse.Namespace) -> int:
    """Sample, run the two jobs, compare, print; exit 0 whatever the agreement."""
    check_input(args.input)
    demo_notice(args)
    with signals_interrupt(), work_dir(args.work_dir) as work:
        sample = take_sample(args, work)
        requests = {p: job_request(args, work, p) for p in (REFERENCE, args.precision)}
        with _daemon(args, work) as client:
            jobs = run_jobs(client, requests, work)
        outputs = [Path(requests[p].output) for p in (REFERENCE, args.precision)]
        try:
            comparison = compare_output_dirs(args.precision, *outputs)
        except ComparisonError as exc:
            raise ClientError(f"the two runs cannot be compared: {exc}") from None
    summary = {"input": os.path.abspath(args.input), "seed": args.seed, "models": _models(args)}
    summary |= {"sampled": len(sample.records), "input_records": sample.total, "jobs": jobs}
    if args.json:
        print_json(summary | comparison.as_dict())
    else:
        print(report_text(summary, comparison))
    return EXIT_OK


def check_input(path: str) -> None:
    """What `submit` refuses at once (missing, empty, bzip2/xz/zstd...), in its words."""
    from virnuc.daemon.jobs.submission import SubmitRefused, check_head

    try:
        with open(os.path.expanduser(path), "rb") as handle:
            check_head(path, handle.read(4096))
    except OSError as exc:
        raise ClientError(f"input {path}: {exc.strerror}", EXIT_INVALID_INPUT) from None
    except SubmitRefused as exc:
        raise ClientError(exc.message, EXIT_INVALID_INPUT) from None


def take_sample(args: argparse.Namespace, work: Path) -> Sample:
    from virnuc.pipeline.fasta import FastaError

    print(f"virnucctl: sampling {args.sample} records of {args.input}", file=sys.stderr)
    try:
        sample = sample_records(os.path.expanduser(args.input), args.sample, args.seed)
    except FastaError as exc:
        raise ClientError(str(exc), EXIT_INVALID_INPUT) from None
    write_fasta(sample.records, work / SAMPLE_NAME)
    return sample


def job_request(args: argparse.Namespace, work: Path, precision: str) -> SubmitArgs:
    """A `submit` of the sample with the command's model options, in `precision`."""
    job = argparse.Namespace(**vars(args))
    job.inputs, job.out, job.precision = [str(work / SAMPLE_NAME)], str(work / precision), precision
    job.save_embeddings, job.checkpoint_every, job.force = False, None, False
    return submit_args(job)


@contextmanager
def _daemon(args: argparse.Namespace, work: Path) -> Iterator[DaemonClient]:
    if is_private(args):
        model_sets = read_model_sets(args.config) if args.config else ""
        device = choose_device(args.device or AUTO_DEVICE)
        daemon = PrivateDaemon(device, args.workers or 1, None, args.timeout, model_sets)
        with daemon as client:
            yield client
        return
    address = DaemonAddress.resolve(args.state_dir, args.endpoint, args.events_endpoint)
    curve = CurveKeys.from_options(args.curve_server_key, args.curve_client_key)
    with DaemonClient(address.control, address.events, args.timeout, curve=curve) as client:
        try:
            share_with_daemon(address.control, work, os.path.expanduser(args.input))
            yield client
        except DaemonUnreachable as e:
            e.advice = address.advice()
            raise


def run_jobs(client: DaemonClient, requests: dict[str, SubmitArgs], work: Path) -> dict[str, str]:
    """Submit both jobs, follow each to its end; the job ids, by precision. A job that
    fails fails the command; one left unfinished (Ctrl-C, an error) is killed."""
    jobs: dict[str, str] = {}
    try:
        for precision, request in requests.items():
            jobs[precision] = _submit(client, request, work)
        for precision, job_id in jobs.items():
            print(f"virnucctl: {precision} job {job_id}", file=sys.stderr)
            check_done(follow_with_bar(client, job_id))
    except BaseException:
        _kill_quietly(client, jobs.values())
        raise
    return jobs


def _submit(client: DaemonClient, request: SubmitArgs, work: Path) -> str:
    """The new job's id. A refusal that names the work dir (outside a shared virnucd's
    input_roots, say) says how to choose another."""
    try:
        return str(client.call(request)["job_id"])
    except ClientError as exc:
        if str(work) not in str(exc) or isinstance(exc, DaemonUnreachable):
            raise
        raise ClientError(
            f"{exc} (the sample and both outputs go in --work-dir, default $TMPDIR: "
            "choose a directory virnucd may read and write, e.g. under its input_roots)",
            exc.exit_code,
        ) from None


def _kill_quietly(client: DaemonClient, job_ids: Iterable[str]) -> None:
    for job_id in job_ids:
        with suppress(ClientError):  # already ended, or the daemon is gone
            client.call(KillArgs(job_id), timeout=min(5.0, client.timeout))


def _models(args: argparse.Namespace) -> str:
    if args.models:
        return args.models
    if args.profile:
        return f"profile {args.profile}"
    return args.classifier or "default"


def report_text(summary: dict[str, Any], result: Comparison) -> str:
    """The human report: agreement, score differences, the records whose call changed."""
    reduced = result.precision
    lines = [
        f"{summary['sampled']} of {summary['input_records']} records of {summary['input']} "
        f"(seed {summary['seed']}), models {summary['models']}: {REFERENCE} against {reduced}",
        f"records: {result.records_agree}/{result.records} same call "
        f"({100 * result.record_agreement:.2f} %)",
        f"frames:  {result.frames_agree}/{result.frames} same label "
        f"({100 * result.frame_agreement:.2f} %)",
        f"P(virus) difference: per frame max {result.max_score_diff:.3g}, "
        f"median {result.median_score_diff:.3g}; per record max {result.max_record_score_diff:.3g}",
    ]
    if not result.changed:
        lines.append("no record's call changed")
        return "\n".join(lines)
    lines.append(f"records whose call changed ({len(result.changed)}):")
    lines.append(f"  record_id\t{REFERENCE}\tscore\t{reduced}\tscore")
    for change in result.changed:
        lines.append(
            f"  {change.id}\t{change.fp32_call}\t{_score(change.fp32_score)}\t"
            f"{change.reduced_call}\t{_score(change.reduced_score)}"
        )
    return "\n".join(lines)


def _score(value: float | None) -> str:
    return "NA" if value is None else f"{value:.4f}"
