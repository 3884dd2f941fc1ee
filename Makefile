# The two commands of the README: `make run` and `make test`. Each creates .venv when missing
# and installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck clean bench bench-smoke

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/lrsearch serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Benchmarks (BENCHMARKS.md): the full run rewrites its figures; the smoke run is seconds-long
# per benchmark and is also run by `make test` (tests/test_bench_smoke.py).
bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-smoke: $(STAMP)
	LRSEARCH_BENCH_RESULTS=$$(mktemp -d) $(BIN)/python -m bench.run --smoke

lint: $(STAMP)
	$(BIN)/ruff check lrsearch service worker tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
