# The verbs people type. Every target sets up .venv first (a no-op when it is up to date).
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: setup demo test test-fast lint bench-ingest bench-quality movielens gpu-check clean

setup:  ## create .venv with the pinned stack (CPU; CONF_PROFILE_TARGET=gpu for CUDA machines)
	bash scripts/setup.sh

demo: setup  ## run the main job on the embedded default (local Ray, CPU, bundled model, built-in data)
	$(PY) -m jobs.pipeline $(ARGS)

test: setup  ## the full test suite (what CI runs)
	$(PY) -m pytest $(ARGS)

test-fast: setup  ## the pure core and plumbing without Ray, engines or training (a test that starts Ray fails here)
	CONF_PROFILE_NO_RAY=1 $(PY) -m pytest -m "not (slow or ray or llm or train or e2e or fault)" $(ARGS)

lint: setup  ## ruff on everything, mypy on the pure core
	$(PY) -m ruff check .
	$(PY) -m mypy conf_profile/core conf_profile/synthetic

bench-ingest: setup  ## Ray ingest vs single-process baseline (USERS=100000 by default)
	$(PY) -m jobs.bench ingest --users $(or $(USERS),100000)

bench-quality: setup  ## quality ladder: every stage on the same held-out users with 95% CIs (DATA=movielens for MovieLens 100K)
	$(PY) -m jobs.bench quality --data $(or $(DATA),builtin) $(ARGS)

ML_DATA ?= data/movielens
ML_RUN ?= runs/movielens
movielens: setup  ## MovieLens 100K benchmark: import (ML_SOURCE=ml-100k.zip, or the recbole wheel), pipeline, references, report
	$(PY) -m jobs.import_movielens --out $(ML_DATA) --overwrite $(if $(ML_SOURCE),--source $(ML_SOURCE))
	$(PY) -m jobs.pipeline --config jobs/configs/movielens.yaml --run-dir $(ML_RUN) \
		--set input.logs=$(ML_DATA)/logs --set input.truth=$(ML_DATA)/truth.parquet $(ARGS)
	$(PY) -m jobs.references --config jobs/configs/movielens.yaml --run-dir $(ML_RUN) --truth $(ML_DATA)/truth.parquet
	$(PY) -m jobs.evaluate --config jobs/configs/movielens.yaml --run-dir $(ML_RUN) --truth $(ML_DATA)/truth.parquet \
		--users $(ML_RUN)/references/test_users.parquet --report report_test

gpu-check: setup  ## two SFT and two GRPO steps of the tiny model on this machine's GPU (NCCL, bf16), with figures
	$(PY) scripts/gpu_check.py $(ARGS)

clean:  ## remove runs/ (keeps .venv and the model cache)
	rm -rf runs
