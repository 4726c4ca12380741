"""How far two runs over the same frames are apart, for the precision benchmarks.

Shared by ``bench_precision.py`` (CPU) and ``gpu_bench.py`` (one GPU): per-frame
embedding cosines, and the classifier calibration that makes labels of random-weight
models worth comparing. Imports nothing but torch, numpy and the classifier, so the
GPU bench can load it from a checkout that is not installed.
"""

from __future__ import annotations

import numpy as np
import torch

from virnuc.pipeline.classifier import MLPClassifier


def calibrate_batchnorm(classifier: MLPClassifier, features: np.ndarray) -> None:
    """Set BatchNorm's running statistics to the hidden layer's on these features.

    A random classifier's BatchNorm holds mean 0, variance 1, which saturates almost
    every score at 0 or 1 and makes label agreement meaningless; trained weights carry
    the statistics of their training features, as this does with fp32 features.
    """
    device = next(classifier.parameters()).device
    with torch.inference_mode():
        hidden = classifier.hidden_layer(torch.from_numpy(features).to(device))
        classifier.bn1.running_mean.copy_(hidden.mean(0))
        classifier.bn1.running_var.copy_(hidden.var(0, unbiased=False))


def calibrate_classifier(classifier: MLPClassifier, features: np.ndarray) -> None:
    """`calibrate_batchnorm`, then the output bias moved so that the median frame of
    ``features`` sits on the decision boundary: half the frames are called virus,
    many of them close to it, where a precision's small differences can flip a call.
    That is a harder test of label agreement than trained weights, whose scores are
    mostly near 0 or 1."""
    calibrate_batchnorm(classifier, features)
    device = next(classifier.parameters()).device
    with torch.inference_mode():
        logits = classifier(torch.from_numpy(features).to(device))
        margin = (logits[:, 1] - logits[:, 0]).median()
        classifier.output_layer.bias[1] -= margin  # virus logit: median margin now 0


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Minimum and mean of the row-by-row cosines of ``a`` and ``b``, in float64."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    cos = (a64 * b64).sum(axis=1) / np.maximum(norms, 1e-300)
    return {"min": float(cos.min()), "mean": float(cos.mean())}


def embedding_cosines(
    test: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Cosines of (nucleotide, protein) embeddings to the reference's, per frame.

    ``features_centered`` subtracts the reference's mean feature vector from both
    first: random-weight models give every frame a large shared component, which
    flatters the plain cosine.
    """
    features_t, features_r = np.concatenate(test, axis=1), np.concatenate(reference, axis=1)
    center = features_r.mean(axis=0, keepdims=True)
    return {
        "nucleotide": cosine_stats(test[0], reference[0]),
        "protein": cosine_stats(test[1], reference[1]),
        "features": cosine_stats(features_t, features_r),
        "features_centered": cosine_stats(features_t - center, features_r - center),
    }
