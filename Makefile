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

.PHONY: run test test-fast lint lock setup clean bench ui notebook server docs

# the environment comes from uv.lock (every version pinned and hashed): the same set here, in CI and in
# the Compose images; uv itself is the one pinned below. Bytecode is compiled at install (as pip does):
# where PYTHONDONTWRITEBYTECODE is set, every start would otherwise compile MLflow and pandas afresh. pyproject.toml keeps the lower bounds for
# users who `pip install` the package. After changing a dependency there, run `make lock`.
UV_VERSION := 0.13.9
UV := UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv
SYNC := $(UV) sync --frozen --inexact --quiet --compile-bytecode

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"

$(BIN)/trilho: pyproject.toml uv.lock | $(BIN)/uv
	$(SYNC) --extra test
	@test -s $@ || $(SYNC) --extra test --reinstall-package trilho   # an emptied entry point is written again
	@touch $@

setup: $(BIN)/trilho

## run the experiment on the embedded default (./lake, sqlite:///mlflow.db); SOURCE=file:path.csv to use a local copy
run: setup
	$(BIN)/trilho run --experiment $(EXPERIMENT) $(if $(SOURCE),--source "$(SOURCE)") --summary-json summary.json \
		--offline-source "$(OFFLINE_SOURCE)" $(RUN_ARGS)

## set up and run the whole test suite
test: setup
	$(BIN)/python -m pytest -q -ra

## the tests that neither train a model, start a service nor start fresh interpreters (under 45 s here), a
## worker per core: these fit nothing, so no worker starts threads of its own
test-fast: setup
	$(BIN)/python -m pytest -q -ra -n auto -m "not training and not services and not processes"

$(VENV)/.lint: $(BIN)/trilho
	$(SYNC) --extra test --extra lint
	@touch $@

$(VENV)/.docs: $(BIN)/trilho
	$(SYNC) --extra test --extra docs
	@touch $@

## the documentation site in site/ (MkDocs): reference pages generated from the code, every warning an error
docs: $(VENV)/.docs
	$(BIN)/python docs/reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "site/index.html"

## re-resolve uv.lock after a change to the dependencies in pyproject.toml
lock: $(BIN)/uv
	$(UV) lock

## style, types and the import layers (ruff, mypy, import-linter)
lint: $(VENV)/.lint
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

## benchmarks (minutes each); figures go in BENCHMARKS.md / STATISTICS.md
bench: setup
	$(BIN)/python benchmarks/bench_experiment.py
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_predict.py

## JupyterLab on notebooks/ (127.0.0.1; the token is printed)
notebook: setup
	$(SYNC) --extra test --extra notebook
	$(BIN)/trilho notebook --lab notebooks/diabetes.ipynb

## an MLflow server with the UI on 127.0.0.1:5000 (SQLite store, proxied artifacts)
server: setup
	$(BIN)/trilho server

ui: setup
	$(BIN)/trilho ui

clean:
	rm -rf lake mlflow.db mlruns mlartifacts summary.json notebook-out site
