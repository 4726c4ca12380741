"""Device benchmark: the original VirNucPro method against ours, at the real model shapes.

Random-initialised models built in memory at the published shapes (no checkpoint on
disk, no network):

* ESM-2 3B: fair-esm's ``ESM2(num_layers=36, embed_dim=2560, attention_heads=40)``;
* DNABERT-S: its MosaicBERT code vendored in ``pipeline/dnabert_s_code/`` at hidden
  768, 12 layers, 12 heads, with a BPE tokenizer trained here on the synthetic DNA to
  a 4096-token vocabulary (a stock ``transformers.BertModel`` stands in, flagged in the
  JSON, while the vendored code is absent);
* VirNucPro's MLP (3328 -> 512 -> 2) with random weights, its BatchNorm statistics
  set from fp32 features of the warm-up frames, as training would have left them.

Input is synthetic coding DNA (``bench/synthetic.py``), cut into chunks and translated
into frames by ``pipeline/frames.py``. Runs, all over the same frames:

* ``original_fp32``: the original's method, as ``bench/bench_pipeline.py`` defines
  it: DNABERT one sequence per forward pass, ESM-2 (fair-esm's own forward) in
  fair-esm's ``toks_per_batch=2048`` batches, then the classifier;
* ``ours_fp32`` / ``ours_tf32`` / ``ours_bf16``: our embedders (``DnabertEmbedder``,
  ``EsmEmbedder``) over blocks of 2048 frames, as ``Predictor`` scores them; tf32 is
  set by ``pipeline.models.use_precision``, bf16 casts the models as ``load`` does.

It prints one JSON object (also to ``--out``): tokens/s per stage (ESM: real tokens,
BOS and EOS included, no padding; DNABERT: tokenizer ids, CLS and SEP included),
frames/s end to end, peak GPU memory, bf16 (and tf32) against fp32 embedding cosines
and label agreement, the host share of a block (translate + tokenize over the block's
wall time), and the issue's goals as ratios (value / goal; nothing is asserted).

``--budget-seconds`` (default 420) bounds the whole run: a short warm-up estimates each
run's cost per frame, and the workload is sized to fit. ``--smoke`` runs the same code
at tiny shapes on CPU in well under a minute (tests/bench/test_gpu_bench.py).

Dependencies: torch, transformers (with tokenizers, safetensors, huggingface_hub) and
numpy must be installed; fair-esm and einops are installed on first use, offline, from
the wheels in ``bench/wheels/`` (see bench/README.md), into a temporary directory. The
project itself is not installed: ``virnuc.pipeline`` is mapped onto this checkout's
``pipeline/`` folder, and only pipeline modules that need none of h5py, pyzmq,
structlog or biopython are imported (the JSON lists any that were).

    bash bench/gpu_bench.sh --out gpu_bench.json          # on the GPU machine
    .venv/bin/python bench/gpu_bench.py --smoke            # here, on CPU
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import importlib.util
import json
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

START = time.perf_counter()
REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO / "bench" / "wheels"
# import name -> distribution: what the bench needs beyond torch/transformers/numpy.
CARRIED = {"esm": "fair-esm", "einops": "einops"}
# Imported by pipeline modules the bench must not load (daemon/output/FASTA side).
UNWANTED_MODULES = ("h5py", "zmq", "structlog", "Bio", "msgpack")


def ensure_carried_wheels() -> dict[str, Any]:
    """Make fair-esm and einops importable, installing them offline if they are not.

    They go into a per-Python temporary directory (``pip install --no-index
    --find-links bench/wheels --no-deps --target ...``), put first on ``sys.path``;
    nothing is installed into the interpreter's own site-packages. Without pip, the
    pure-Python wheels are unzipped there instead (a py3-none-any wheel unzipped is an
    importable tree).
    """
    missing = [dist for module, dist in CARRIED.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return {"installed": [], "from": None}
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    target = Path(tempfile.gettempdir()) / f"virnuc-gpu-bench-site-{tag}"
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    still = [dist for module, dist in CARRIED.items() if importlib.util.find_spec(module) is None]
    if not still:
        return {"installed": missing, "from": str(target), "how": "reused"}
    if not WHEELS.is_dir():
        sys.exit(
            f"gpu_bench: {', '.join(still)} not importable and {WHEELS} does not exist; "
            "fill it as bench/README.md says (pip download ... -d bench/wheels)"
        )
    target.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    command = [*pip, "--find-links", str(WHEELS), "--target", str(target), *still]
    how = "pip"
    try:
        subprocess.run(command, check=True, stdout=sys.stderr, stderr=sys.stderr)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"gpu_bench: pip failed ({e}); unzipping the wheels instead", file=sys.stderr)
        how = "unzip"
        for dist in still:
            prefix = dist.replace("-", "_") + "-"
            wheels = sorted(w for w in WHEELS.glob("*-none-any.whl") if w.name.startswith(prefix))
            if not wheels:
                sys.exit(f"gpu_bench: no pure-Python wheel of {dist} in {WHEELS}")
            with zipfile.ZipFile(wheels[-1]) as archive:
                archive.extractall(target)
    importlib.invalidate_caches()
    return {"installed": still, "from": str(target), "how": how}


def map_source_tree() -> str:
    """Make ``virnuc.pipeline`` importable from this checkout without installing it.

    pyproject maps top-level folders onto ``virnuc.*`` (package-dir); an editable
    install of this checkout does that already. Otherwise (not installed, or installed
    from elsewhere) ``virnuc`` is loaded from ``virnuc/`` and ``virnuc.pipeline`` from
    ``pipeline/`` as packages whose search path is that folder, so relative and
    ``virnuc.pipeline.x`` imports both resolve. Only ``pipeline`` is mapped: the bench
    needs nothing from the daemon side.
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # for bench.synthetic
    try:
        import virnuc.pipeline.spec as probe

        found = Path(probe.__file__).resolve().parent
        if found == (REPO / "pipeline").resolve():
            return str(found)
    except ImportError:
        pass  # not installed: map it
    # Not installed, or installed from another checkout: this checkout's code it is.
    for name in [n for n in sys.modules if n == "virnuc" or n.startswith("virnuc.")]:
        del sys.modules[name]
    root = _load_package("virnuc", REPO / "virnuc")
    root.pipeline = _load_package("virnuc.pipeline", REPO / "pipeline")
    return f"{REPO / 'pipeline'} (mapped from the source tree)"


def _load_package(name: str, folder: Path) -> Any:
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot map {name} onto {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


CARRIED_INFO = ensure_carried_wheels()
VIRNUC_FROM = map_source_tree()

import esm  # noqa: E402
import transformers  # noqa: E402
from esm.data import FastaBatchedDataset  # noqa: E402
from esm.model.esm2 import ESM2  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from virnuc.pipeline import dnabert_embedder as dnabert_module  # noqa: E402
from virnuc.pipeline import tiny_models  # noqa: E402
from virnuc.pipeline.batching import (  # noqa: E402
    device_token_budget,
    inference_dtype,
    token_budget_batches,
)
from virnuc.pipeline.classifier import MLPClassifier, classify  # noqa: E402
from virnuc.pipeline.dnabert_embedder import DnabertEmbedder  # noqa: E402
from virnuc.pipeline.esm_embedder import CPU_MAX_TOKENS as ESM_CPU_MAX_TOKENS  # noqa: E402
from virnuc.pipeline.esm_embedder import TRUNCATION_SEQ_LENGTH, EsmEmbedder  # noqa: E402
from virnuc.pipeline.esm_fast import EsmBatchTokenizer, FastEsm2  # noqa: E402
from virnuc.pipeline.frames import Frame, record_frames  # noqa: E402
from virnuc.pipeline.models import use_precision  # noqa: E402

from bench.agreement import calibrate_batchnorm, embedding_cosines  # noqa: E402
from bench.synthetic import coding_sequence  # noqa: E402

BLOCK_FRAMES = 2048
"""Frames per block, ``predict.DEFAULT_BLOCK_FRAMES`` (predict imports the FASTA and
output modules, so it is not imported here; tests/bench/test_gpu_bench.py checks the value)."""
ORIGINAL_TOKS_PER_BATCH = 2048  # fair-esm's extract script default, as VirNucPro runs it
GOALS = {"esm_bf16_tokens_per_s": 70_000.0, "speedup": 10.0, "cosine": 0.999, "labels": 0.999}


@dataclass(frozen=True)
class Shapes:
    esm_layers: int
    esm_dim: int
    esm_heads: int
    bert_hidden: int
    bert_layers: int
    bert_heads: int
    bert_vocab: int
    classifier_hidden: int
    bpe_corpus: tuple[int, int]  # sequences, length


FULL = Shapes(36, 2560, 40, 768, 12, 12, 4096, 512, (3000, 1000))
SMOKE = Shapes(2, 64, 4, 64, 2, 4, 512, 512, (300, 300))

Record = tuple[str, str]


class Interrupted(Exception):
    """SIGTERM (the wrapper's timeout): stop and print what was measured so far."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def log(message: str) -> None:
    print(f"[gpu_bench {time.perf_counter() - START:6.1f}s] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- models


def train_dna_bpe(shapes: Shapes, seed: int) -> PreTrainedTokenizerFast:
    """A BPE tokenizer like DNABERT-S's (vocab 4096, ``[CLS] $A [SEP]``), trained on
    synthetic coding DNA, by ``tiny_models.train_dna_bpe``."""
    rng = random.Random(seed)
    count, length = shapes.bpe_corpus
    corpus = [coding_sequence(rng, length) for _ in range(count)]
    return tiny_models.as_bert_tokenizer(tiny_models.train_dna_bpe(corpus, shapes.bert_vocab))


def build_esm(shapes: Shapes, device: torch.device, seed: int) -> tuple[ESM2, Any]:
    """fair-esm's ESM-2 at the given shape, random weights initialised on ``device``."""
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with device:
            model = ESM2(
                num_layers=shapes.esm_layers,
                embed_dim=shapes.esm_dim,
                attention_heads=shapes.esm_heads,
                alphabet=alphabet,
                token_dropout=True,
            )
    return model.to(device).eval(), alphabet  # .to(): anything made off the default device


def dnabert_s_config(shapes: Shapes, vocab_size: int, pad_token_id: int) -> dict[str, Any]:
    """DNABERT-S's config.json (MAGICS-LAB/DNABERT_S evaluate/model_codes/config.json)
    at the bench's sizes; the published one is hidden 768, 12 layers, 12 heads, vocab
    4096, intermediate 3072, ALiBi from 512 positions, no attention dropout."""
    return {
        "alibi_starting_size": 512,
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_bert.BertConfig",
            "AutoModel": "bert_layers.BertModel",
        },
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": shapes.bert_hidden,
        "initializer_range": 0.02,
        "intermediate_size": 4 * shapes.bert_hidden,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "model_type": "bert",
        "num_attention_heads": shapes.bert_heads,
        "num_hidden_layers": shapes.bert_layers,
        "pad_token_id": pad_token_id,
        "position_embedding_type": "absolute",
        "type_vocab_size": 2,
        "vocab_size": vocab_size,
    }


def build_dnabert(
    shapes: Shapes, tokenizer: Any, device: torch.device, seed: int, workdir: Path
) -> tuple[Any, dict[str, Any]]:
    """DNABERT-S's MosaicBERT at ``shapes``, random weights, moved to ``device``.

    The class is the one our loader builds for the published model:
    ``dnabert_embedder.dnabert_s_model_class`` imports it from the vendored
    ``pipeline/dnabert_s_code`` (triton hidden, so both methods run the PyTorch attention
    the original ran). A config.json is written to a scratch directory and read back as
    the stock ``BertConfig`` our loader passes, and the model gets the loader's bf16
    attention-bias fix. Without the vendored code a stock
    ``transformers.BertModel`` stands in, flagged ``stand_in`` in the JSON.
    """
    code = REPO / "pipeline" / "dnabert_s_code"
    config_dict = dnabert_s_config(shapes, len(tokenizer), int(tokenizer.pad_token_id))
    model_class: Any = None
    stand_in = None
    vendored = getattr(dnabert_module, "dnabert_s_model_class", None)
    if not (code / "bert_layers.py").is_file():
        stand_in = f"{code} missing"
    elif vendored is None:
        stand_in = "pipeline.dnabert_embedder has no dnabert_s_model_class"
    else:
        folder = workdir / "dnabert-s-config"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
        try:
            model_class = vendored()
            config = transformers.BertConfig.from_pretrained(str(folder))
        except Exception as e:  # report it and measure the stand-in rather than nothing
            stand_in = f"importing the vendored code failed: {type(e).__name__}: {e}"
    # Built on the CPU and then moved, as a loaded model is: bert_layers.py makes its
    # ALiBi tensor with the legacy torch.Tensor(), which ignores a default device.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if stand_in is None:
            model = model_class(config)
        else:
            fields = {k: v for k, v in config_dict.items() if k != "auto_map"}
            model = transformers.BertModel(transformers.BertConfig(**fields))
    model = model.to(device)
    cast_bias = getattr(dnabert_module, "_cast_attention_bias", None)
    hooks = cast_bias(model) if cast_bias is not None else None
    info = {
        "code": "pipeline/dnabert_s_code (DNABERT-S's MosaicBERT, vendored)"
        if stand_in is None
        else "transformers.BertModel (STAND-IN, not DNABERT-S's architecture)",
        "stand_in": stand_in is not None,
        "stand_in_reason": stand_in,
        "class": f"{type(model).__module__}.{type(model).__name__}",
        "bf16_attention_bias_hooks": hooks,
    }
    return model.eval(), info


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- input


def make_records(rng: random.Random, min_frames: int, chunk_length: int) -> list[Record]:
    """Synthetic coding records (150-3000 nt, as bench/synthetic's lengths) until they
    hold at least ``min_frames`` frames."""
    records: list[Record] = []
    frames = 0
    while frames < min_frames:
        sequence = coding_sequence(rng, rng.randint(150, 3000))
        record_id = f"synthetic_{len(records) + 1:06d}"
        frames += sum(1 for _ in record_frames(record_id, sequence, chunk_length))
        records.append((record_id, sequence))
    return records


def all_frames(records: Iterable[Record], chunk_length: int) -> Iterator[Frame]:
    for record_id, sequence in records:
        yield from record_frames(record_id, sequence, chunk_length)


def esm_tokens(proteins: Iterable[str]) -> int:
    """Real ESM tokens: kept residues plus BOS and EOS, no padding."""
    return sum(min(len(p), TRUNCATION_SEQ_LENGTH) + 2 for p in proteins)


# ----------------------------------------------------------------------------- runs


@dataclass
class RunResult:
    frame_ids: list[str]
    nucleotide: np.ndarray
    protein: np.ndarray
    scores: np.ndarray
    stages: dict[str, float]  # seconds
    wall: float
    dnabert_tokens: int
    esm_tokens: int
    host: dict[str, float] = field(default_factory=dict)


def original_method(
    records: list[Record],
    chunk_length: int,
    tokenizer: Any,
    bert: Any,
    esm_model: ESM2,
    alphabet: Any,
    classifier: MLPClassifier,
    device: torch.device,
) -> RunResult:
    """``bench_pipeline.original_method``, step for step, with inputs sent to ``device``
    and each stage timed: DNABERT one sequence per forward, ESM-2's own forward in
    fair-esm's 2048-token batches, then the classifier."""
    stages: dict[str, float] = {}
    sync(device)
    start = time.perf_counter()
    frames = list(all_frames(records, chunk_length))
    stages["translate"] = time.perf_counter() - start
    layer = esm_model.num_layers
    dnabert_tokens = 0
    with torch.no_grad():
        mark = time.perf_counter()
        nucleotide = []
        for frame in frames:
            ids = tokenizer(frame.nucleotides, return_tensors="pt")["input_ids"]
            dnabert_tokens += ids.shape[1]
            nucleotide.append(bert(ids.to(device))[0][0].mean(0))
        sync(device)
        stages["dnabert"] = time.perf_counter() - mark
        mark = time.perf_counter()
        dataset = FastaBatchedDataset([f.id for f in frames], [f.protein for f in frames])
        batches = dataset.get_batch_indices(ORIGINAL_TOKS_PER_BATCH, extra_toks_per_seq=1)
        converter = alphabet.get_batch_converter(TRUNCATION_SEQ_LENGTH)
        protein: dict[str, torch.Tensor] = {}
        for batch in batches:
            labels, strs, tokens = converter([dataset[i] for i in batch])
            reps = esm_model(tokens.to(device), repr_layers=[layer])["representations"][layer]
            for row, (label, seq) in enumerate(zip(labels, strs, strict=True)):
                protein[label] = reps[row, 1 : min(len(seq), TRUNCATION_SEQ_LENGTH) + 1].mean(0)
        sync(device)
        stages["esm"] = time.perf_counter() - mark
    mark = time.perf_counter()
    nucleotide_t = torch.stack(nucleotide).float()
    protein_t = torch.stack([protein[f.id] for f in frames]).float()
    features = torch.cat([nucleotide_t, protein_t], dim=1).cpu().numpy()
    scores = classify(classifier, features)
    stages["classify"] = time.perf_counter() - mark
    wall = time.perf_counter() - start
    return RunResult(
        [f.id for f in frames],
        nucleotide_t.cpu().numpy(),
        protein_t.cpu().numpy(),
        scores,
        stages,
        wall,
        dnabert_tokens,
        esm_tokens(f.protein for f in frames),
    )


def ours(
    records: list[Record],
    chunk_length: int,
    dnabert: DnabertEmbedder,
    esm_embedder: EsmEmbedder,
    esm_max_tokens: int,
    classifier: MLPClassifier,
    device: torch.device,
    block_frames: int = BLOCK_FRAMES,
) -> RunResult:
    """``Predictor._score`` over blocks cut as ``Predictor`` cuts them (frames pooled
    across records, ``block_frames`` at a time), each stage timed.

    After each block (outside the timed region) its host work is measured again on
    its own: the DNABERT tokenizer over the block and ``EsmBatchTokenizer`` over its
    token-budget batches. ``host share = (translate + tokenize) / block wall``.
    """
    stages = {"translate": 0.0, "dnabert": 0.0, "esm": 0.0, "classify": 0.0}
    host = {"translate": 0.0, "tokenize": 0.0, "wall": 0.0, "blocks": 0.0, "share_sum": 0.0}
    esm_tokenizer = EsmBatchTokenizer(esm_embedder.alphabet, TRUNCATION_SEQ_LENGTH)
    frame_iter = all_frames(records, chunk_length)
    ids: list[str] = []
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    dnabert_tokens = esm_token_count = 0
    wall = 0.0
    while True:
        sync(device)
        t0 = time.perf_counter()
        block = list(islice(frame_iter, block_frames))
        t1 = time.perf_counter()
        if not block:
            break
        nucleotide = dnabert.embed([f.nucleotides for f in block])
        sync(device)
        t2 = time.perf_counter()
        protein = esm_embedder.embed([f.protein for f in block])
        sync(device)
        t3 = time.perf_counter()
        scores = classify(classifier, np.concatenate([nucleotide, protein], axis=1))
        t4 = time.perf_counter()
        for name, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[name] += seconds
        wall += t4 - t0
        # Host work of this block, measured on its own (not part of the wall time).
        mark = time.perf_counter()
        token_ids = dnabert.tokenizer([f.nucleotides for f in block])["input_ids"]
        proteins = [f.protein for f in block]
        lengths = [min(len(p), TRUNCATION_SEQ_LENGTH) + 2 for p in proteins]
        for batch in token_budget_batches(lengths, esm_max_tokens):
            esm_tokenizer([proteins[i] for i in batch])
        tokenize = time.perf_counter() - mark
        host["translate"] += t1 - t0
        host["tokenize"] += tokenize
        host["wall"] += t4 - t0
        host["blocks"] += 1
        host["share_sum"] += (t1 - t0 + tokenize) / (t4 - t0)
        dnabert_tokens += sum(len(t) for t in token_ids)
        esm_token_count += sum(lengths)
        ids.extend(f.id for f in block)
        pieces.append((nucleotide, protein, scores))
    nucleotide_all, protein_all, scores_all = (np.concatenate(p) for p in zip(*pieces, strict=True))
    return RunResult(
        ids,
        nucleotide_all,
        protein_all,
        scores_all,
        stages,
        wall,
        dnabert_tokens,
        esm_token_count,
        host,
    )


# ----------------------------------------------------------------------------- report


def run_report(result: RunResult, peak: int | None, baseline: int | None) -> dict[str, Any]:
    frames = len(result.frame_ids)
    s = result.stages
    report: dict[str, Any] = {
        "frames": frames,
        "wall_s": round(result.wall, 3),
        "frames_per_s": frames / result.wall,
        "stages": {
            "translate": {"s": s["translate"]},
            "dnabert": {
                "s": s["dnabert"],
                "tokens": result.dnabert_tokens,
                "tokens_per_s": result.dnabert_tokens / s["dnabert"],
            },
            "esm": {
                "s": s["esm"],
                "tokens": result.esm_tokens,
                "tokens_per_s": result.esm_tokens / s["esm"],
            },
            "classify": {"s": s["classify"], "frames_per_s": frames / s["classify"]},
        },
        "peak_gpu_memory_gib": None if peak is None else peak / 2**30,
        "gpu_memory_before_run_gib": None if baseline is None else baseline / 2**30,
    }
    if result.host:
        h = result.host
        report["host_share"] = {
            "mean_per_block": h["share_sum"] / h["blocks"],
            "overall": (h["translate"] + h["tokenize"]) / h["wall"],
            "translate_s": h["translate"],
            "tokenize_s": h["tokenize"],
            "blocks": int(h["blocks"]),
        }
    return report


def agreement(test: RunResult, reference: RunResult) -> dict[str, Any]:
    """Per-frame cosines of ``test``'s embeddings to ``reference``'s, and its labels."""
    if test.frame_ids != reference.frame_ids:
        raise AssertionError("the two runs scored different frames")
    labels_t, labels_r = test.scores.argmax(axis=1), reference.scores.argmax(axis=1)
    return {
        "cosine": embedding_cosines(
            (test.nucleotide, test.protein), (reference.nucleotide, reference.protein)
        ),
        "max_abs_score_diff": float(np.abs(test.scores - reference.scores).max()),
        "label_agreement": float((labels_t == labels_r).mean()),
        "label_disagreements": int((labels_t != labels_r).sum()),
        "frames": len(test.frame_ids),
    }


def goal(value: float | None, target: float) -> dict[str, Any]:
    return {
        "value": value,
        "goal": target,
        "ratio": None if value is None else value / target,
        "met": None if value is None else value >= target,
    }


def versions() -> dict[str, Any]:
    found: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
    }
    for dist in ("tokenizers", "fair-esm", "einops", "safetensors", "huggingface-hub"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    return found


def device_info(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {
            "type": "cuda",
            "name": torch.cuda.get_device_name(device),
            "capability": list(torch.cuda.get_device_capability(device)),
            "total_memory_gib": props.total_memory / 2**30,
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    return {
        "type": device.type,
        "name": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- main


@dataclass
class Bench:
    args: argparse.Namespace
    device: torch.device
    shapes: Shapes
    out: dict[str, Any]
    tokenizer: Any = None
    esm_model: Any = None
    alphabet: Any = None
    bert: Any = None
    classifier: Any = None
    esm_max_tokens: int = 0
    bert_max_tokens: int = 0
    results: dict[str, RunResult] = field(default_factory=dict)
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))

    @property
    def deadline(self) -> float:
        return START + self.args.budget_seconds

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def run_original(self, records: list[Record]) -> RunResult:
        use_precision(self.device, "fp32")
        return original_method(
            records,
            self.args.chunk_length,
            self.tokenizer,
            self.bert,
            self.esm_model,
            self.alphabet,
            self.classifier,
            self.device,
        )

    def run_ours(self, records: list[Record], precision: str) -> RunResult:
        use_precision(self.device, precision)
        dnabert = DnabertEmbedder(self.bert, self.tokenizer, self.device, self.bert_max_tokens)
        esm_embedder = EsmEmbedder(self.esm_model, self.alphabet, self.device, self.esm_max_tokens)
        return ours(
            records,
            self.args.chunk_length,
            dnabert,
            esm_embedder,
            self.esm_max_tokens,
            self.classifier,
            self.device,
            self.args.block_frames,
        )

    def cost_per_frame(self, run: Callable[[], RunResult]) -> float:
        """Seconds per frame of ``run`` on the warm-up records: the last of
        ``--warmup-passes`` passes (the first allocates and tunes kernels)."""
        for _ in range(self.args.warmup_passes - 1):
            run()
        result = run()
        return result.wall / max(1, len(result.frame_ids))

    def measured(self, name: str, run: Callable[[], RunResult]) -> None:
        """Run once for the record: peak memory, stage times, and the result kept."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        baseline = torch.cuda.memory_allocated(self.device) if cuda else None
        if self.remaining() <= 0:
            self.out["runs"][name] = {"error": "skipped: the time budget was spent"}
            log(f"{name}: skipped, no budget left")
            return
        log(f"{name}: running ({self.remaining():.0f} s of budget left)")
        try:
            result = run()
        except Interrupted:
            raise
        except Exception as e:  # one failing run (e.g. OOM) must not lose the others
            self.out["runs"][name] = {
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(limit=6),
            }
            log(f"{name}: FAILED {e}")
            return
        peak = torch.cuda.max_memory_allocated(self.device) if cuda else None
        self.results[name] = result
        self.out["runs"][name] = run_report(result, peak, baseline)
        self.out["runs"][name]["settings"] = {
            "esm_dtype": str(next(self.esm_model.parameters()).dtype).removeprefix("torch."),
            "dnabert_dtype": str(next(self.bert.parameters()).dtype).removeprefix("torch."),
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        }
        if name == "ours_tf32" and not cuda:
            self.out["runs"][name]["noop_on_cpu"] = "tf32 is a CUDA matmul mode; on CPU = fp32"
        log(f"{name}: {len(result.frame_ids) / result.wall:.1f} frames/s")


def esm_ceiling(
    model: ESM2, max_tokens: int, mean_tokens: int, device: torch.device, seconds: float
) -> dict[str, Any]:
    """tokens/s of the bare ``FastEsm2`` forward on one ideal batch: our token budget
    filled with equal-length random proteins (no padding, no tokenizer, no pooling),
    as ``bench_pipeline.esm_ceiling``; the ceiling the ESM stage can approach."""
    per_batch = max(1, max_tokens // mean_tokens)
    tokens = torch.randint(4, 24, (per_batch, mean_tokens), device=device)
    fast = FastEsm2(model)
    with torch.inference_mode():
        fast(tokens)  # warm-up at this shape
        sync(device)
        runs, start = 0, time.perf_counter()
        while runs < 2 or time.perf_counter() - start < seconds:
            fast(tokens)
            sync(device)
            runs += 1
        elapsed = time.perf_counter() - start
    return {
        "tokens_per_s": runs * tokens.numel() / elapsed,
        "batch_shape": list(tokens.shape),
        "forwards": runs,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }


def execute(bench: Bench) -> None:
    args, device, shapes, out = bench.args, bench.device, bench.shapes, bench.out
    rng = random.Random(args.seed)
    log(f"device {device}; building models")
    bench.tokenizer = train_dna_bpe(shapes, args.seed)
    bench.esm_model, bench.alphabet = build_esm(shapes, device, args.seed)
    bench.bert, bert_info = build_dnabert(
        shapes, bench.tokenizer, device, args.seed + 1, bench.workdir
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed + 2)
        classifier = MLPClassifier(shapes.bert_hidden + shapes.esm_dim, shapes.classifier_hidden, 2)
    bench.classifier = classifier.to(device).eval()
    # The budgets our embedders' loaders pick (fp32 sizing, the largest activations).
    bench.esm_max_tokens = args.esm_max_tokens or device_token_budget(
        device, shapes.esm_dim, torch.float32, cpu_budget=ESM_CPU_MAX_TOKENS
    )
    bench.bert_max_tokens = args.dnabert_max_tokens or device_token_budget(
        device, shapes.bert_hidden, torch.float32, cpu_budget=dnabert_module.CPU_MAX_TOKENS
    )
    out["models"] = {
        "weights": "random (initialised in memory); numbers, not predictions, are the point",
        "esm": {
            "layers": shapes.esm_layers,
            "embed_dim": shapes.esm_dim,
            "heads": shapes.esm_heads,
            "parameters": parameter_count(bench.esm_model),
            "code": "fair-esm esm.model.esm2.ESM2, token_dropout=True",
        },
        "dnabert": {
            "hidden": shapes.bert_hidden,
            "layers": shapes.bert_layers,
            "heads": shapes.bert_heads,
            "vocab": len(bench.tokenizer),
            "parameters": parameter_count(bench.bert),
            **bert_info,
        },
        "classifier": {
            "shape": [shapes.bert_hidden + shapes.esm_dim, shapes.classifier_hidden, 2],
            "weights": "random MLP of VirNucPro's shape; BatchNorm statistics "
            "set from fp32 features of the warm-up frames",
        },
    }
    log(f"models built ({out['models']['dnabert']['code']})")

    warm = make_records(rng, args.warmup_frames, args.chunk_length)
    cost = {"original_fp32": bench.cost_per_frame(lambda: bench.run_original(warm))}
    fp32_warm = bench.run_ours(warm, "fp32")
    calibrate_batchnorm(
        bench.classifier, np.concatenate([fp32_warm.nucleotide, fp32_warm.protein], axis=1)
    )
    cost["ours_fp32"] = bench.cost_per_frame(lambda: bench.run_ours(warm, "fp32"))
    cost["ours_tf32"] = bench.cost_per_frame(lambda: bench.run_ours(warm, "tf32"))
    cost["ours_bf16"] = cost["ours_tf32"]  # assumed (bf16 is measured after the cast)
    per_frame = sum(cost.values())
    reserve = 10.0 + 3 * per_frame * len(fp32_warm.frame_ids)  # cast, bf16 warm-up, report
    usable = max(0.0, bench.remaining() - reserve) * args.fill
    frames = args.frames or int(usable / per_frame)
    frames = max(args.min_frames, min(args.max_frames, frames))
    records = make_records(rng, frames, args.chunk_length)
    out["workload"] = {
        "chunk_length": args.chunk_length,
        "records": len(records),
        "warmup_frames": len(fp32_warm.frame_ids),
        "estimated_s_per_frame": cost,
        "planned_frames": frames,
        "block_frames": args.block_frames,
        "esm_max_tokens": bench.esm_max_tokens,
        "dnabert_max_tokens": bench.bert_max_tokens,
        "original_esm_toks_per_batch": ORIGINAL_TOKS_PER_BATCH,
        "budget_seconds": args.budget_seconds,
    }
    log(f"warm-up done; {frames} frames planned, est. {frames * per_frame:.0f} s")

    bench.measured("original_fp32", lambda: bench.run_original(records))
    bench.measured("ours_fp32", lambda: bench.run_ours(records, "fp32"))
    bench.measured("ours_tf32", lambda: bench.run_ours(records, "tf32"))
    dtype = inference_dtype(device, True)
    bench.esm_model.to(dtype)
    bench.bert.to(dtype)
    out["workload"]["bf16_dtype"] = str(dtype).removeprefix("torch.")
    try:
        bench.run_ours(warm, "bf16")  # warm-up in the new dtype
    except Exception as e:
        log(f"bf16 warm-up failed: {e}")
    bench.measured("ours_bf16", lambda: bench.run_ours(records, "bf16"))
    seconds = args.ceiling_seconds
    if "ours_bf16" in bench.results and bench.remaining() > 3 * seconds:
        result = bench.results["ours_bf16"]
        mean_tokens = round(result.esm_tokens / len(result.frame_ids))
        out["esm_bf16_bare_forward"] = esm_ceiling(
            bench.esm_model, bench.esm_max_tokens, mean_tokens, device, seconds
        )
    dedup_row(bench)


# ----------------------------------------------------------------------------- dedup

DEDUP_READS = 4096  # 150-base reads per input of the dedup row (smoke: 24)
DEDUP_GOAL = 0.6  # 50 % duplicate reads at most 0.6x the time of unique ones


def dedup_row(bench: Bench) -> None:
    """Identical frames computed once (issue 25): ``Predictor`` with its frame cache
    over 150-base coding reads of which every other one repeats an earlier read,
    against as many reads that all differ (the same size), then the duplicated reads
    again with the cache off (``frame_cache_mb=0``: every frame computed). The models
    are the bench's, as they are by then (bf16 after ``ours_bf16``). In ``out["dedup"]``:
    each run's seconds, frames/s and frames reused, the largest score difference with
    and without the cache, and the goal as a ratio (reported, not asserted)."""
    from virnuc.pipeline.models import ModelSet
    from virnuc.pipeline.predict import Predictor
    from virnuc.pipeline.spec import ModelSpec

    args, device = bench.args, bench.device
    count = dedup_reads(bench)
    rng = random.Random(args.seed + 25)
    unique = [_Read(f"read_{i:06d}", coding_sequence(rng, 150)) for i in range(count)]
    duplicated: list[_Read] = []
    for i in range(count):  # as bench/synthetic.write_fastq(duplicates=0.5) spreads them
        copy = duplicated and i % 2 == 1
        sequence = rng.choice(duplicated).sequence if copy else coding_sequence(rng, 150)
        duplicated.append(_Read(f"read_{i:06d}", sequence))
    dtype = next(bench.esm_model.parameters()).dtype
    precision = "fp32" if dtype == torch.float32 else "bf16"
    spec = ModelSpec("bench-esm", "bench-dnabert", "bench-classifier", args.chunk_length,
                     precision=precision)  # fmt: skip
    models = ModelSet(
        spec,
        device,
        EsmEmbedder(bench.esm_model, bench.alphabet, device, bench.esm_max_tokens),
        DnabertEmbedder(bench.bert, bench.tokenizer, device, bench.bert_max_tokens),
        bench.classifier,
    )
    runs: dict[str, Any] = {}
    scores: dict[str, np.ndarray] = {}
    for name, reads, cache_mb in (("unique", unique, None), ("duplicated", duplicated, None),
                                  ("duplicated_no_cache", duplicated, 0)):  # fmt: skip
        if bench.remaining() <= 0:
            runs[name] = {"error": "skipped: the time budget was spent"}
            continue
        options = {} if cache_mb is None else {"frame_cache_mb": cache_mb}
        predictor = Predictor(models, block_frames=args.block_frames, prefetch=True, **options)
        sync(device)
        start = time.perf_counter()
        results = list(predictor.predict(reads))  # type: ignore[arg-type]  # id, sequence
        sync(device)
        seconds = time.perf_counter() - start
        frames = sum(len(r.frame_ids) for r in results)
        scores[name] = np.concatenate([r.scores for r in results])
        runs[name] = {
            "reads": len(reads),
            "frames": frames,
            "frames_reused": sum(r.frames_reused for r in results),
            "wall_s": seconds,
            "frames_per_s": frames / seconds,
        }
        log(f"dedup {name}: {frames / seconds:.1f} frames/s")
    out: dict[str, Any] = {"precision": precision, "runs": runs}
    if "duplicated" in scores and "duplicated_no_cache" in scores:
        difference = np.abs(scores["duplicated"] - scores["duplicated_no_cache"]).max()
        out["max_abs_score_diff_cache_vs_none"] = float(difference)
    if "wall_s" in runs.get("unique", {}) and "wall_s" in runs.get("duplicated", {}):
        ratio = runs["duplicated"]["wall_s"] / runs["unique"]["wall_s"]
        out["goal"] = {
            "of": "time of 50 % duplicate reads over unique reads, with the cache",
            "value": ratio,
            "goal": DEDUP_GOAL,
            "ratio": ratio / DEDUP_GOAL,
            "met": ratio <= DEDUP_GOAL,  # at most the goal
            "note": "reported, not asserted"
            + ("; smoke shapes on CPU: not meaningful" if args.smoke else ""),
        }
    bench.out["dedup"] = out


def dedup_reads(bench: Bench) -> int:
    """`DEDUP_READS`, or fewer when its three runs (about 1.5 frames a read, at the
    bf16 run's frames/s) would not fit in what is left of the budget."""
    if bench.args.smoke:
        return 24
    rate = bench.out["runs"].get("ours_bf16", {}).get("frames_per_s")
    if not rate:
        return DEDUP_READS
    fits = int(max(0.0, bench.remaining() - 10.0) * rate / (3 * 1.5))
    return max(64, min(DEDUP_READS, fits))


class _Read(NamedTuple):
    """A read as ``Predictor`` reads one (a ``FastaRecord``'s id and sequence)."""

    id: str
    sequence: str


def summarise(bench: Bench) -> None:
    out, results = bench.out, bench.results
    if out.get("workload") and results:
        first = next(iter(results.values()))
        frames = len(first.frame_ids)
        out["workload"].update(
            frames=frames,
            esm_tokens=first.esm_tokens,
            dnabert_tokens=first.dnabert_tokens,
            mean_esm_tokens_per_frame=first.esm_tokens / frames,
            mean_dnabert_tokens_per_frame=first.dnabert_tokens / frames,
        )
    reference = results.get("ours_fp32")
    comparisons = {}
    if reference is not None:
        for name in ("original_fp32", "ours_tf32", "ours_bf16"):
            if name in results:
                comparisons[f"{name}_vs_ours_fp32"] = agreement(results[name], reference)
    out["agreement"] = comparisons
    runs = out.get("runs", {})

    def rate(name: str) -> float | None:
        run = runs.get(name, {})
        return run.get("frames_per_s")

    original = rate("original_fp32")
    speedups: dict[str, float | None] = {}
    for name in ("ours_fp32", "ours_tf32", "ours_bf16"):
        ours_rate = rate(name)
        speedups[name] = ours_rate / original if ours_rate and original else None
    out["speedup_vs_original"] = speedups
    bf16 = comparisons.get("ours_bf16_vs_ours_fp32")
    esm_bf16 = runs.get("ours_bf16", {}).get("stages", {}).get("esm", {}).get("tokens_per_s")
    cosine = None
    if bf16 is not None:
        cosine = min(bf16["cosine"]["nucleotide"]["min"], bf16["cosine"]["protein"]["min"])
    out["goals"] = {
        "note": "ratio = value / goal; reported, not asserted"
        + ("; smoke shapes on CPU: not meaningful" if bench.args.smoke else ""),
        "esm_bf16_tokens_per_s": goal(esm_bf16, GOALS["esm_bf16_tokens_per_s"]),
        "end_to_end_speedup_bf16_vs_original": goal(
            out["speedup_vs_original"].get("ours_bf16"), GOALS["speedup"]
        ),
        "bf16_vs_fp32_min_cosine": goal(cosine, GOALS["cosine"]),
        "bf16_vs_fp32_label_agreement": goal(
            None if bf16 is None else bf16["label_agreement"], GOALS["labels"]
        ),
    }
    out["goals"]["esm_bf16_tokens_per_s"]["of"] = (
        "our ESM stage over the workload (tokenize, forward, pool), real tokens only"
    )
    bare = out.get("esm_bf16_bare_forward", {}).get("tokens_per_s")
    if bare is not None:
        out["goals"]["esm_bf16_bare_forward_tokens_per_s"] = goal(
            bare, GOALS["esm_bf16_tokens_per_s"]
        )
    out["goals"]["bf16_vs_fp32_min_cosine"]["of"] = (
        "the lower of the per-frame minimum cosines of the DNABERT and the ESM embeddings"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Fill bench/wheels first, see bench/README.md; run via bench/gpu_bench.sh.",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny shapes on CPU, ~50 frames: the same code, in seconds",
    )
    parser.add_argument("--device", help="default: cuda (cpu with --smoke)")
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=None,
        help="whole-run time budget the workload is sized to (default 420)",
    )
    parser.add_argument("--frames", type=int, default=0, help="fix the frame count instead")
    parser.add_argument("--min-frames", type=int, default=None)
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--warmup-frames", type=int, default=None)
    parser.add_argument(
        "--warmup-passes",
        type=int,
        default=None,
        help="passes over the warm-up frames per run (default 2, smoke 1)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default: torch's; smoke 1)"
    )
    parser.add_argument(
        "--fill",
        type=float,
        default=0.8,
        help="share of the remaining budget the workload may fill",
    )
    parser.add_argument(
        "--ceiling-seconds",
        type=float,
        default=None,
        help="time the bare bf16 ESM forward this long (default 5, smoke 0.3)",
    )
    parser.add_argument("--chunk-length", type=int, default=300, choices=(300, 500))
    parser.add_argument("--block-frames", type=int, default=None)
    parser.add_argument("--esm-max-tokens", type=int, default=0)
    parser.add_argument("--dnabert-max-tokens", type=int, default=0)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    smoke = args.smoke
    defaults = {
        "budget_seconds": 100.0 if smoke else 420.0,
        "min_frames": 40 if smoke else 512,
        "max_frames": 48 if smoke else 50_000,
        "warmup_frames": 8 if smoke else 96,
        "warmup_passes": 1 if smoke else 2,
        "ceiling_seconds": 0.3 if smoke else 5.0,
        "block_frames": 16 if smoke else BLOCK_FRAMES,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.device = args.device or ("cpu" if smoke else "cuda")
    args.threads = args.threads or (1 if smoke else 0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device (use --smoke, or --device cpu)", file=sys.stderr)
        return 2
    out: dict[str, Any] = {
        "bench": "virnuc bench/gpu_bench.py",
        "smoke": args.smoke,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": device_info(device),
        "versions": versions(),
        "virnuc_pipeline_from": VIRNUC_FROM,
        "carried_wheels": CARRIED_INFO,
        "models": {},
        "workload": {},
        "runs": {},
    }
    bench = Bench(args, device, SMOKE if args.smoke else FULL, out)
    complete = True
    workdir = tempfile.TemporaryDirectory(prefix="virnuc-gpu-bench-")
    bench.workdir = Path(workdir.name)
    try:
        execute(bench)
    except Interrupted as e:
        complete = False
        out["error"] = f"interrupted ({e}): partial results"
    except Exception as e:
        complete = False
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc(limit=8)
    finally:
        workdir.cleanup()
    try:
        summarise(bench)
    except Exception as e:
        out["summary_error"] = f"{type(e).__name__}: {e}"
    out["imported_unwanted_modules"] = [m for m in UNWANTED_MODULES if m in sys.modules]
    out["complete"] = complete and all("error" not in r for r in out["runs"].values())
    out["elapsed_s"] = round(time.perf_counter() - START, 1)
    text = json.dumps(out, indent=2, default=float)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text, flush=True)
    return 0 if out["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
