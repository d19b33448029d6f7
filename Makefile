# normlab developer tasks. `make demo` and `make test` are the two commands of the README.
#
# TORCH_INDEX: an extra package index for the torch wheel, for machines without a local CPU
# wheel, e.g. `make test TORCH_INDEX=https://download.pytorch.org/whl/cpu`.

PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_FLAGS := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)

.PHONY: venv test lint docs demo bench mutate clean distclean

venv: $(STAMP)

# torch first and pinned, so that installing the extras never resolves another torch build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(TORCH_FLAGS) 'torch==$(TORCH_VERSION)'
	$(BIN)/pip install -e '.[lab,dev]'
	touch $@

# ruff, then the import-linter contracts of pyproject.toml (the package's layering).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports --no-cache --no-logo

test: lint
	$(BIN)/python -m pytest -q --doctest-modules src/normlab tests

# The API site from the docstrings (mkdocs.yml) into site/; --strict: any warning fails it. The
# docs extra goes into the venv once, after torch (so pip never resolves another torch build).
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install $(TORCH_FLAGS) 'torch==$(TORCH_VERSION)' -e '.[lab,dev,docs]'
	touch $@

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The lab's default sweep (see README): runs/mnist1d-mlp-TIMESTAMP/report.md. After an
# interruption, `make demo DEMO_ARGS=--resume` continues the latest sweep.
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/normlab sweep $(DEMO_ARGS)

# `normlab bench` (every layer, default shapes, both modes: table and raw numbers in
# benchmarks/results/bench.{md,json}), then the scripts that pin the README's older tables.
bench: $(STAMP)
	$(BIN)/normlab bench --json benchmarks/results/bench.json --markdown benchmarks/results/bench.md
	$(BIN)/python benchmarks/bench_classic.py
	$(BIN)/python benchmarks/bench_batch_family.py
	$(BIN)/python benchmarks/bench_fold.py
	$(BIN)/python benchmarks/bench_per_call.py --save
	$(BIN)/python benchmarks/bench_resnet_step.py
	$(BIN)/python benchmarks/bench_reparam.py --save
	$(BIN)/python benchmarks/bench_issue12.py --save

# Mutation testing, before resolving an issue that touches core/, the shared kernel and
# state-loading code or surgery/ (not in CI, not in `make test`): mutmut over the modules of
# [tool.mutmut] in pyproject.toml, niced, one worker (mutants/ keeps its results, so a second run
# only retests what changed; OMP_NUM_THREADS=1: a forked worker whose parent started OpenMP
# threads can hang); the per-module score; then the semantic mutants of
# tests/semantic_mutants/ (each must fail its tests). MUTANTS: mutant-name globs to run a part,
# e.g. `make mutate MUTANTS='normlab.core.moments*'`. Results: benchmarks/results/mutation.md.
MUTANTS ?=
mutate: $(STAMP)
	OMP_NUM_THREADS=1 nice -n 15 $(BIN)/mutmut run --max-children 1 $(MUTANTS)
	$(BIN)/python scripts/mutation_score.py
	nice -n 15 $(BIN)/python scripts/semantic_mutants.py

clean:
	rm -rf build dist site mutants src/*.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
