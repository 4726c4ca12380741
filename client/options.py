"""The options several virnucctl commands share (the parser itself is client/cli.py)."""

from __future__ import annotations

import argparse

from virnuc.protocol import MODEL_CHOICES
from virnuc.protocol.constants import PRECISIONS

from .follow import GIVE_UP_AFTER


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_model_options(parser: argparse.ArgumentParser, precision: bool = True) -> None:
    """Model options shared by ``submit``, ``predict`` and ``compare-precision`` (which
    has its own ``--precision``: precision=False); the daemon resolves them."""
    group = parser.add_argument_group("models")
    group.add_argument(
        "--models",
        metavar="NAME",
        help="virnucd's model set; replaces all but --precision",
    )
    group.add_argument(
        "--profile", choices=["demo"], help="tiny random models, for trying the pipeline"
    )
    group.add_argument("--esm", metavar="NAME|FILE", help="ESM-2 model (default esm2_t36_3B_UR50D)")
    group.add_argument(
        "--dnabert", metavar="ID|DIR", help="DNABERT-S model (default zhihan1996/DNABERT-S)"
    )
    group.add_argument(
        "--classifier", metavar="FILE", help="VirNucPro's 300_model.pth or 500_model.pth"
    )
    group.add_argument(
        "--chunk-length",
        type=int,
        choices=[300, 500],
        help="default: from the classifier's name, else 300",
    )
    if not precision:
        return
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32: VirNucPro's scores (the usual default); tf32, bf16: faster on GPUs, "
        "scores differ slightly",
    )


def models_mixed(args: argparse.Namespace) -> str:
    """The options given beside ``--models`` that a model set replaces, as a list for
    the usage error; "" when there is no such clash."""
    if args.models is None:
        return ""
    given = [name for name in MODEL_CHOICES if getattr(args, name) is not None]
    return ", ".join("--" + name.replace("_", "-") for name in given)


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """INPUT..., --out and the per-job switches shared by ``submit`` and ``predict``."""
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="FASTA/FASTQ file, plain or .gz (several: one job)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--save-embeddings", action="store_true", help="also write embeddings.h5")
    parser.add_argument("--force", action="store_true", help="replace results already in --out")
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        metavar="N",
        help="records per checkpoint part (default: daemon's)",
    )
    add_model_options(parser)


def add_follow_options(parser: argparse.ArgumentParser) -> None:
    """How long following a job keeps asking a virnucd that does not answer."""
    parser.add_argument(
        "--give-up-after",
        type=positive_float,
        metavar="SECONDS",
        default=GIVE_UP_AFTER,
        help=f"exit 3 after SECONDS of silence (default {GIVE_UP_AFTER:g})",
    )
