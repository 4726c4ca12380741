"""Tiny, randomly initialised models in the real models' on-disk formats.

No weights can be downloaded on our machines, yet the loaders are the product. These
builders write small models of the same architectures, in the same files, so the
``demo`` profile and the tests run the real loading code end to end. Each builder is a
pure function of its arguments: the same seed gives the same weights, bit for bit, and
the global RNG is left as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
from pathlib import Path

import esm
import torch
from esm.model.esm2 import ESM2
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import BertConfig, PreTrainedTokenizerFast

from .dnabert_embedder import dnabert_s_model_class

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# DNABERT-S's architecture code, vendored unchanged (see its README.md). Every file a
# model directory of the published zhihan1996/DNABERT-S holds next to its weights: the
# builder copies them there too, though the loader never runs a directory's code.
DNABERT_S_CODE = Path(__file__).with_name("dnabert_s_code")
DNABERT_S_CODE_FILES = (
    "bert_layers.py",
    "bert_padding.py",
    "configuration_bert.py",
    "flash_attn_triton.py",
)
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
    tokenizer: Tokenizer | None = None,
) -> Path:
    """Write a tiny DNABERT-S: its real architecture code, config, weights and tokenizer.

    The directory is laid out as the published ``zhihan1996/DNABERT-S``: ``config.json``
    whose ``auto_map`` names ``configuration_bert.BertConfig`` and
    ``bert_layers.BertModel``, those code files (DNABERT-S's own, from
    ``dnabert_s_code/``), ``pytorch_model.bin``, and the tokenizer files. It loads
    through the same path as the published model (the vendored class, chosen by
    ``auto_map``), so its quirks (ALiBi, unpadded attention, a float32 attention bias,
    a tuple output) are the real ones.
    The tokenizer mirrors DNABERT-S's: BPE over DNA with ``[CLS] ... [SEP]`` around
    every sequence, so the "mean over all tokens, specials included" rule is exercised.
    ``tokenizer`` replaces the small one trained from ``seed`` (e.g. one of DNABERT-S's
    4096 entries, from `train_dna_bpe`, so a benchmark sees its tokens per frame).
    """
    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer or _train_dna_bpe(seed)
    as_bert_tokenizer(tokenizer).save_pretrained(str(out))
    for name in DNABERT_S_CODE_FILES:
        shutil.copyfile(DNABERT_S_CODE / name, out / name)
    config = _dnabert_s_config(
        vocab_size=tokenizer.get_vocab_size(),
        hidden=hidden,
        layers=layers,
        heads=heads,
        pad_token_id=tokenizer.token_to_id("[PAD]"),
    )
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model_class = dnabert_s_model_class()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(BertConfig.from_pretrained(str(out)))
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out / "pytorch_model.bin")
    return out


def _dnabert_s_config(
    vocab_size: int, hidden: int, layers: int, heads: int, pad_token_id: int
) -> dict[str, object]:
    """DNABERT-S's config.json (DNABERT-2-117M's, evaluate/model_codes/config.json in
    MAGICS-LAB/DNABERT_S) with the sizes made small."""
    return {
        "alibi_starting_size": 512,
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_bert.BertConfig",
            "AutoModel": "bert_layers.BertModel",
            "AutoModelForMaskedLM": "bert_layers.BertForMaskedLM",
            "AutoModelForSequenceClassification": "bert_layers.BertForSequenceClassification",
        },
        "classifier_dropout": None,
        "gradient_checkpointing": False,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": 4 * hidden,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "model_type": "bert",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "pad_token_id": pad_token_id,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def _train_dna_bpe(seed: int, vocab_size: int = 96) -> Tokenizer:
    """A small BPE vocabulary trained on seeded random DNA, with BERT's post-processing."""
    rng = random.Random(seed)
    return train_dna_bpe(["".join(rng.choices("ACGT", k=200)) for _ in range(200)], vocab_size)


def as_bert_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """`tokenizer` as transformers loads DNABERT-S's (BERT's special tokens)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=2048,
    )


def train_dna_bpe(corpus: list[str], vocab_size: int) -> Tokenizer:
    """A BPE vocabulary of `vocab_size` trained on `corpus`, with BERT's [CLS]/[SEP]
    post-processing, as DNABERT-S's tokenizer is built."""
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
