# virnuc: every set-up step lives here, so a fresh clone needs only `make demo` / `make test`.
# Any Python pyproject.toml's requires-python allows (3.11 or newer; CI runs 3.11): the
# first of these found, or `make PYTHON=/path/to/python3.x venv`.
PYTHON_MIN := 3.11
comma      := ,
PYTHON     ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < ($(subst .,$(comma),$(PYTHON_MIN))))' \
		>/dev/null 2>&1 && { echo $$p; break; }; \
	done)
VENV       := .venv
BIN        := $(VENV)/bin
# CPU build here. On a GPU server: make venv TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'
TORCH_SPEC ?= torch==2.13.0
STAMP      := $(VENV)/.installed
TYPECHECK  := build/typecheck

.PHONY: venv demo test test-fast lint format bench bench-scale bench-slurm bench-wheels clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || test -n "$(PYTHON)" || { echo "virnuc needs Python \
	$(PYTHON_MIN) or newer: none of python3.13, python3.12, python3.11, python3 is one; \
	install one, or name it: make PYTHON=/path/to/python3.x" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# --force: a second `make demo` replaces the first one's demo-output.
demo: venv
	$(BIN)/virnucctl predict examples/example.fasta --out demo-output --profile demo --save-embeddings --force

# mypy cannot follow setuptools' editable import hook, so it checks a link tree
# that spells the installed layout (virnuc/pipeline -> ../../pipeline, ...).
lint: venv
	$(BIN)/ruff check .
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/virnuc
	cp virnuc/*.py $(TYPECHECK)/virnuc/
	for p in pipeline daemon worker client protocol; do ln -s ../../../$$p $(TYPECHECK)/virnuc/$$p; done
	cd $(TYPECHECK) && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p virnuc

test: lint
	$(BIN)/pytest

# The quick loop while editing: ruff, then every test but the end-to-end ones (tests/e2e/,
# real virnucd and workers), spread over the cores. `make test` runs them all, and mypy.
test-fast: venv
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n auto -m "not e2e"

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv
	$(BIN)/python -m bench.bench_pipeline
	$(BIN)/python -m bench.bench_dedup
	$(BIN)/python -m bench.bench_precision
	$(BIN)/python -m bench.bench_daemon
	$(BIN)/python -m bench.bench_recovery
	$(BIN)/python -m bench.bench_startup

# FASTQ.gz against plain at 1M and 4M reads (bench/README.md); SIZES=20000,80000 for a quick look.
bench-scale: venv
	$(BIN)/python -m bench.bench_scale $(if $(SIZES),--sizes $(SIZES))

bench-slurm: venv
	$(BIN)/python -m bench.bench_slurm

# Wheels bench/gpu_bench.py installs offline on a GPU machine that lacks them
# (pure-Python, so they serve its CPython 3.12 and our 3.11 alike); bench/README.md.
bench-wheels:
	$(PYTHON) -m pip download fair-esm==2.0.0 einops --only-binary=:all: \
		--python-version 3.12 --platform manylinux2014_x86_64 -d bench/wheels

clean:
	rm -rf $(VENV) build demo-output .pytest_cache .mypy_cache .ruff_cache .hypothesis
