"""Tiny, randomly initialised models in the real models' on-disk formats.

No weights can be downloaded on our machines, yet the loaders are the product. These
builders write small models of the same architectures, in the same files, so the
``demo`` profile and the tests run the real loading code end to end. Each builder is a
pure function of its arguments: the same seed gives the same weights, bit for bit, and
the global RNG is left as it was.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

import esm
import torch
from esm.model.esm2 import ESM2
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_CONTACT_HEAD_PREFIX = "contact_head."


def build_tiny_esm2(
    path_dir: str | os.PathLike[str],
    name: str = "esm2_t2_demo",
    layers: int = 2,
    embed_dim: int = 32,
    heads: int = 2,
    seed: int = 0,
) -> Path:
    """Write ``<dir>/<name>.pt`` and ``<dir>/<name>-contact-regression.pt``; return the first.

    The layout is what fair-esm's ``_load_model_and_alphabet_core_v2`` reads: ``cfg.model``
    is an ``argparse.Namespace`` (the class torch's weights-only loader must be told
    about) and every weight sits under an ``encoder.`` prefix, which fair-esm strips.
    The contact head lives in its own file, as in fair-esm's downloads. ``name`` must
    start with ``esm2``: fair-esm chooses its ESM-2 loader by that prefix.
    """
    if not name.startswith("esm2"):
        raise ValueError(f"ESM-2 checkpoint names must start with 'esm2', got {name!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ESM2(
            num_layers=layers,
            embed_dim=embed_dim,
            attention_heads=heads,
            alphabet=esm.data.Alphabet.from_architecture("ESM-1b"),
            token_dropout=True,
        )
    state = model.state_dict()
    cfg = argparse.Namespace(
        encoder_layers=layers,
        encoder_embed_dim=embed_dim,
        encoder_attention_heads=heads,
        token_dropout=True,
    )
    weights = {
        f"encoder.{k}": v.clone()
        for k, v in state.items()
        if not k.startswith(_CONTACT_HEAD_PREFIX)
    }
    regression = {k: v.clone() for k, v in state.items() if k.startswith(_CONTACT_HEAD_PREFIX)}
    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_file = out / f"{name}.pt"
    torch.save({"cfg": {"model": cfg}, "model": weights}, model_file)
    torch.save({"model": regression}, out / f"{name}-contact-regression.pt")
    return model_file


def build_tiny_bert(
    path_dir: str | os.PathLike[str],
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
) -> Path:
    """Write a DNABERT-S-like directory (BPE tokenizer + BERT) that ``AutoModel`` loads.

    The tokenizer mirrors DNABERT-S's: BPE over DNA with ``[CLS] ... [SEP]`` added around
    every sequence, so the "mean over all tokens, specials included" rule is exercised.
    The model is a stock ``transformers.BertModel`` (DNABERT-S's own class is remote
    code we cannot ship); the embedder treats both the same way.
    """
    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_dna_bpe(seed)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=2048,
    )
    fast.save_pretrained(str(out))
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        # Frames are at most 501 nt; even one token per base plus CLS/SEP fits.
        max_position_embeddings=2048,
        pad_token_id=tokenizer.token_to_id("[PAD]"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def _train_dna_bpe(seed: int, vocab_size: int = 96) -> Tokenizer:
    """A small BPE vocabulary trained on seeded random DNA, with BERT's post-processing."""
    rng = random.Random(seed)
    corpus = ["".join(rng.choices("ACGT", k=200)) for _ in range(200)]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(BERT_SPECIAL_TOKENS),
        initial_alphabet=list("ACGTN"),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer
