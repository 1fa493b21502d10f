# Two commands for a newcomer: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCE ?=
EXPERIMENT ?= diabetes
RUN_ARGS ?=

.PHONY: run test setup clean bench ui

$(BIN)/trilho: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@

setup: $(BIN)/trilho

## run the experiment on the embedded default (./lake, sqlite:///mlflow.db); SOURCE=file:path.csv to use a local copy
run: setup
	$(BIN)/trilho run --experiment $(EXPERIMENT) $(if $(SOURCE),--source "$(SOURCE)") --summary-json summary.json $(RUN_ARGS)

## set up and run the whole test suite
test: setup
	$(BIN)/python -m pytest -q -ra

bench: setup
	$(BIN)/python benchmarks/bench_experiment.py

ui: setup
	$(BIN)/trilho ui

clean:
	rm -rf lake mlflow.db mlruns summary.json
