"""DNABERT-S's architecture (MosaicBERT), vendored unchanged; see README.md here.

`virnuc.pipeline.dnabert_embedder` imports ``bert_layers`` from this package: DNABERT-S
runs this code, never the copy a model directory ships next to its weights.
"""
