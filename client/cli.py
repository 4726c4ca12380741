"""virnucctl: the command line for virnuc.

Exit codes (stable, for scripts):
  0  success
  1  the job failed, or an unexpected error
  2  usage error (bad options)
  4  invalid input: a FASTA, a model or an output directory we cannot use
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INVALID_INPUT = 4

DEMO_NOTICE = (
    "NOTE: the demo profile uses tiny random models; its predictions are meaningless.\n"
    "      For real predictions pass the published weights: --classifier 300_model.pth\n"
    "      (or 500_model.pth with --chunk-length 500), and optionally\n"
    "      --esm NAME|FILE and --dnabert ID|DIR."
)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument(
        "--profile", choices=["demo"], help="tiny random models, for trying the pipeline"
    )
    group.add_argument(
        "--esm", help="fair-esm ESM-2 name or local .pt file (default esm2_t36_3B_UR50D)"
    )
    group.add_argument(
        "--dnabert", help="DNABERT-S hub id or local directory (default zhihan1996/DNABERT-S)"
    )
    group.add_argument("--classifier", help="VirNucPro classifier: 300_model.pth or 500_model.pth")
    group.add_argument(
        "--chunk-length",
        type=int,
        choices=[300, 500],
        help="chunk length; default from the classifier's name, else 300",
    )
    group.add_argument(
        "--half",
        action="store_true",
        help="bf16/fp16 on CUDA (faster; scores differ slightly from VirNucPro's fp32)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virnucctl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser("predict", help="predict one FASTA file and wait for the outputs")
    predict.add_argument("input", help="FASTA file (plain or .gz)")
    predict.add_argument("--out", required=True, help="output directory")
    predict.add_argument("--save-embeddings", action="store_true", help="also write embeddings.h5")
    predict.add_argument("--force", action="store_true", help="replace results already in --out")
    predict.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    predict.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    predict.add_argument("--json", action="store_true", help="print the result as JSON")
    add_model_options(predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .commands import run_command

    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
