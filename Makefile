# Two commands for a newcomer: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCE ?=
EXPERIMENT ?= diabetes
RUN_ARGS ?=
# where `make run` goes when the experiment's own source cannot be reached (no network): the
# generator of data with the diabetes set's schema, said in one line, its model kept apart
OFFLINE_SOURCE ?= synthetic:diabetes?rows=1000&seed=1

.PHONY: run test test-fast lint setup clean bench ui notebook server

$(BIN)/trilho: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@

setup: $(BIN)/trilho

## run the experiment on the embedded default (./lake, sqlite:///mlflow.db); SOURCE=file:path.csv to use a local copy
run: setup
	$(BIN)/trilho run --experiment $(EXPERIMENT) $(if $(SOURCE),--source "$(SOURCE)") --summary-json summary.json \
		--offline-source "$(OFFLINE_SOURCE)" $(RUN_ARGS)

## set up and run the whole test suite
test: setup
	$(BIN)/python -m pytest -q -ra

## the tests that neither train a model nor start a service (under a minute)
test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not training and not services"

$(VENV)/.lint: $(BIN)/trilho
	$(BIN)/python -m pip install --quiet -e ".[test,lint]"
	@touch $@

## style, types and the import layers (ruff, mypy, import-linter)
lint: $(VENV)/.lint
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

## benchmarks (minutes each); figures go in BENCHMARKS.md / STATISTICS.md
bench: setup
	$(BIN)/python benchmarks/bench_experiment.py
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_predict.py

## JupyterLab on notebooks/ (127.0.0.1; the token is printed)
notebook: setup
	$(BIN)/python -m pip install --quiet -e ".[test,notebook]"
	$(BIN)/trilho notebook --lab notebooks/diabetes.ipynb

## an MLflow server with the UI on 127.0.0.1:5000 (SQLite store, proxied artifacts)
server: setup
	$(BIN)/trilho server

ui: setup
	$(BIN)/trilho ui

clean:
	rm -rf lake mlflow.db mlruns mlartifacts summary.json notebook-out
