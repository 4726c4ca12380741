#!/usr/bin/env bash
# Run bench/gpu_bench.py on a GPU machine under a hard time limit. It prepares
# nothing: fair-esm and einops come from bench/wheels/ (fill it beforehand, see
# bench/README.md) unless the interpreter already has them.
#
#   bash bench/gpu_bench.sh [--out FILE] [any bench/gpu_bench.py option]
#
# PYTHON (default python3) is the interpreter with torch and transformers.
# GPU_BENCH_TIMEOUT (default 480 s) is the hard limit; the bench itself sizes its work
# to --budget-seconds (default 420) and, if the limit strikes first, still prints the
# JSON of what it measured (SIGTERM), marked "complete": false.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
limit="${GPU_BENCH_TIMEOUT:-480}"
# No network on the GPU machine: never let transformers or the hub try it.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
# transformers copies DNABERT-S's remote code here to import it; keep it out of $HOME.
export HF_MODULES_CACHE="${HF_MODULES_CACHE:-${TMPDIR:-/tmp}/virnuc-gpu-bench-hf-modules}"
exec timeout --signal=TERM --kill-after=20 "$limit" "$python" "$here/gpu_bench.py" "$@"
