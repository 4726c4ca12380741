"""Our pipeline against the original VirNucPro method, side by side in one run.

Same input, same models (random weights of a mid-size ESM-2, the 6-layer/320-dim shape
of esm2_t6_8M, and a small BERT), same process:

  (a) the original's method: DNABERT one sequence per forward pass; ESM-2 in fair-esm's
      `toks_per_batch=2048` batches (fair-esm's own batch planner, as its extract script
      and VirNucPro use it); then the classifier;
  (b) our `Predictor`: token-budget batches over length-sorted frames, inference mode.

Prints wall time, frames/s and the ratio (a)/(b), checks that both give the same scores,
and prints our ESM stage's tokens/s against the bare model forward on one ideally
batched input (equal lengths, no padding) as the ceiling.

    .venv/bin/python -m bench.bench_pipeline [--records 300] [--seed 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from esm.data import FastaBatchedDataset

from virnuc.pipeline.classifier import MLPClassifier, classify
from virnuc.pipeline.fasta import read_records
from virnuc.pipeline.frames import record_frames
from virnuc.pipeline.models import ModelSet
from virnuc.pipeline.predict import Predictor
from virnuc.pipeline.spec import ModelSpec
from virnuc.pipeline.tiny_models import build_tiny_bert, build_tiny_esm2

from .synthetic import random_lengths, write_fasta


def build_models(root: Path) -> ModelSet:
    esm_path = build_tiny_esm2(root, name="esm2_t6_bench", layers=6, embed_dim=320, heads=20)
    bert_dir = build_tiny_bert(root / "bert", hidden=256, layers=4, heads=4)
    torch.manual_seed(0)
    torch.save(MLPClassifier(256 + 320, 512, 2).state_dict(), root / "classifier.pth")
    spec = ModelSpec(str(esm_path), str(bert_dir), str(root / "classifier.pth"), 300)
    return ModelSet.load(spec)


def original_method(models: ModelSet, fasta: Path) -> tuple[list[str], np.ndarray]:
    frames = [f for r in read_records(fasta) for f in record_frames(r.id, r.sequence, 300)]
    tokenizer, bert = models.dnabert._tokenizer, models.dnabert._model
    esm_model, alphabet = models.esm._model, models.esm._alphabet
    layer = esm_model.num_layers
    with torch.no_grad():
        nucleotide = []
        for frame in frames:
            ids = tokenizer(frame.nucleotides, return_tensors="pt")["input_ids"]
            nucleotide.append(bert(ids)[0][0].mean(0))
        dataset = FastaBatchedDataset([f.id for f in frames], [f.protein for f in frames])
        batches = dataset.get_batch_indices(2048, extra_toks_per_seq=1)
        converter = alphabet.get_batch_converter(1022)
        protein: dict[str, torch.Tensor] = {}
        for batch in batches:
            labels, strs, tokens = converter([dataset[i] for i in batch])
            reps = esm_model(tokens, repr_layers=[layer])["representations"][layer]
            for row, (label, seq) in enumerate(zip(labels, strs, strict=True)):
                protein[label] = reps[row, 1 : min(len(seq), 1022) + 1].mean(0)
    features = torch.cat(
        [torch.stack(nucleotide), torch.stack([protein[f.id] for f in frames])], dim=1
    )
    return [f.id for f in frames], classify(models.classifier, features.numpy())


def ours(models: ModelSet, fasta: Path) -> tuple[list[str], np.ndarray]:
    results = list(Predictor(models).predict(read_records(fasta)))
    return [i for r in results for i in r.frame_ids], np.concatenate([r.scores for r in results])


def esm_ceiling(models: ModelSet, proteins: list[str]) -> tuple[float, float]:
    """tokens/s of our ESM stage vs. the bare forward on equal-length, unpadded batches."""
    tokens = sum(len(p) + 2 for p in proteins)
    start = time.perf_counter()
    models.esm.embed(proteins)
    ours_rate = tokens / (time.perf_counter() - start)
    mean_len = round(np.mean([len(p) for p in proteins]))
    per_batch = max(1, models.esm.max_tokens // (mean_len + 2))  # our budget, no padding
    ideal = torch.randint(4, 24, (per_batch, mean_len + 2))
    batches = max(1, len(proteins) // per_batch)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(batches):
            models.esm._model(ideal, repr_layers=[models.esm.num_layers])
    ceiling = batches * ideal.numel() / (time.perf_counter() - start)
    return ours_rate, ceiling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fasta = root / "bench.fasta"
        write_fasta(fasta, random_lengths(args.records, args.seed), seed=args.seed)
        models = build_models(root)
        threads = torch.get_num_threads()
        print(f"torch {torch.__version__}, {threads} threads, {args.records} records")
        ours(models, fasta)  # warm-up: first calls allocate and tune kernels
        timings = {}
        for name, method in (("original", original_method), ("ours", ours)):
            start = time.perf_counter()
            ids, scores = method(models, fasta)
            timings[name] = (time.perf_counter() - start, ids, scores)
        (t_orig, ids_a, scores_a), (t_ours, ids_b, scores_b) = timings.values()
        assert ids_a == ids_b, "the two methods scored different frames"
        frames = len(ids_a)
        print(f"frames: {frames}; max |score difference| = {np.abs(scores_a - scores_b).max():.2e}")
        print(f"original method: {t_orig:8.2f} s  {frames / t_orig:8.1f} frames/s")
        print(f"ours:            {t_ours:8.2f} s  {frames / t_ours:8.1f} frames/s")
        print(f"speed-up (original / ours): {t_orig / t_ours:.2f}x")
        proteins = [
            f.protein for r in read_records(fasta) for f in record_frames(r.id, r.sequence, 300)
        ]
        rate, ceiling = esm_ceiling(models, proteins)
        print(
            f"ESM stage: {rate:,.0f} tokens/s; bare forward ceiling {ceiling:,.0f} tokens/s "
            f"({100 * rate / ceiling:.0f}% of ceiling)"
        )


if __name__ == "__main__":
    main()
