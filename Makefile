# The two commands of the README: `make run` and `make test`. Each creates .venv when missing
# and installs what it needs first: `make run` only what the service needs (the package's own
# dependencies), `make test` that plus the dev and bench extras.
# tests/test_install_sets.py reads the pip lines below (through `make -n`) and checks both sets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck clean bench bench-smoke bench-gpu

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

# On top of the run set, so that a later `make run` finds its stamp current and installs
# nothing; pip leaves the extras in place when `make run` does reinstall.
$(STAMP): $(RUN_STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/lrsearch serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Benchmarks (BENCHMARKS.md): the full run rewrites its figures; the smoke run is seconds-long
# per benchmark and is also run by `make test` (tests/test_bench_smoke.py).
bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-smoke: $(STAMP)
	LRSEARCH_BENCH_RESULTS=$$(mktemp -d) $(BIN)/python -m bench.run --smoke

# The GPU tier (BENCHMARKS.md): under 8 minutes on one GPU, on KERAS_BACKEND (JAX on a lent
# machine, installed there from the wheels `python -m bench.gpu_wheels` fetches). Installs
# nothing: the machine it is meant for has no package registry. Runs with .venv's Python where
# there is one, else the machine's own (`make bench-gpu BENCH_PYTHON=python3.12` to choose).
BENCH_PYTHON ?= $(shell test -x $(BIN)/python && echo $(BIN)/python || echo python3)
bench-gpu:
	$(BENCH_PYTHON) -m bench.run --gpu

lint: $(STAMP)
	$(BIN)/ruff check lrsearch service worker tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
