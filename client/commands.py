"""What each virnucctl command does, one function per command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli import DEMO_NOTICE, EXIT_FAILED, EXIT_INVALID_INPUT, EXIT_OK
from .progress import ProgressLine


def run_command(args: argparse.Namespace) -> int:
    handler = {"predict": predict}[args.command]
    return handler(args)


def predict(args: argparse.Namespace) -> int:
    """`virnucctl predict INPUT --out DIR [model options]`: run a whole prediction."""
    from virnuc.pipeline.classifier import ClassifierLoadError
    from virnuc.pipeline.fasta import FastaError
    from virnuc.pipeline.models import ModelSet
    from virnuc.pipeline.outputs import OutputExistsError
    from virnuc.pipeline.run import Progress, predict_file
    from virnuc.pipeline.spec import ModelSpecError, resolve_spec

    bar = ProgressLine()

    def show(progress: Progress) -> None:
        bar.update(progress.records_done, progress.records_total, progress.frames_done)

    try:
        spec = resolve_spec(
            profile=args.profile,
            esm=args.esm,
            dnabert=args.dnabert,
            classifier=args.classifier,
            chunk_length=args.chunk_length,
        )
        if spec.profile == "demo":
            print(DEMO_NOTICE, file=sys.stderr)
        models = ModelSet.load(spec, device=args.device, half=args.half)
        done = predict_file(
            models,
            args.input,
            args.out,
            save_embeddings=args.save_embeddings,
            force=args.force,
            on_progress=show,
        )
    except (FastaError, ModelSpecError, ClassifierLoadError, OutputExistsError) as exc:
        print(f"virnucctl: error: {exc}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    except OSError as exc:
        print(f"virnucctl: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    bar.update(done.records_done, done.records_total, done.frames_done, force=True)
    bar.close()
    out = Path(args.out).resolve()
    if args.json:
        print(
            json.dumps(
                {
                    "output": str(out),
                    "records_done": done.records_done,
                    "frames_done": done.frames_done,
                }
            )
        )
    else:
        print(f"done: {done.records_done} records, {done.frames_done} frames -> {out}")
    return EXIT_OK
