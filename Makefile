# The verbs people type. Every target sets up .venv first (a no-op when it is up to date).
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: setup demo test test-fast lint bench-ingest clean

setup:  ## create .venv with the pinned stack (CPU; CONF_PROFILE_TARGET=gpu for CUDA machines)
	bash scripts/setup.sh

demo: setup  ## run the main job on the embedded default (local Ray, CPU, bundled model, built-in data)
	$(PY) -m jobs.pipeline $(ARGS)

test: setup  ## the full test suite (what CI runs)
	$(PY) -m pytest $(ARGS)

test-fast: setup  ## the tests not marked slow
	$(PY) -m pytest -m "not slow" $(ARGS)

lint: setup  ## ruff on everything, mypy on the pure core
	$(PY) -m ruff check .
	$(PY) -m mypy conf_profile/core conf_profile/synthetic

bench-ingest: setup  ## Ray ingest vs single-process baseline (USERS=100000 by default)
	$(PY) -m jobs.bench ingest --users $(or $(USERS),100000)

clean:  ## remove runs/ (keeps .venv and the model cache)
	rm -rf runs
