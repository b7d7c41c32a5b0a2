# seqrec: the two commands are `make run` and `make test`. Both are idempotent.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export MLFLOW_DISABLE_TELEMETRY ?= true
export PYTHONDONTWRITEBYTECODE := 1
# dvc.yaml commands call `python`: make it the project's interpreter.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help install lock run test test-fast test-slow test-production screenshots lint bench bench-quick clean-state

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

LOCK := requirements.lock
PIP_VERSION := 26.3

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "seqrec needs Python 3.11, got " + sys.version' 
	$(PYTHON) -m venv $(VENV)

# Every dependency from the lock (exact versions, sha256-checked), then seqrec itself without
# resolving anything: a fresh machine gets exactly CI's versions.
$(STAMP): pyproject.toml $(LOCK) | $(VENV)/bin/python
	$(BIN)/pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	@# setuptools warns about every editable install; the warning is about its own layout.
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install seqrec from requirements.lock

lock: | $(VENV)/bin/python  ## re-resolve pyproject.toml's dependencies into requirements.lock
	$(BIN)/pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/python scripts/lock_requirements.py

.dvc/config:
	$(BIN)/dvc init --quiet

run: $(STAMP) .dvc/config  ## set up, run `dvc repro` on the synthetic shop, show the results
	$(BIN)/dvc repro
	@echo
	@echo "metrics:    metrics/eval.json, metrics/validation.json, metrics/sequences.json  (dvc metrics show)"
	@echo "plots:      dvc plots show   -> dvc_plots/index.html"
	@echo "reports:    reports/eval.html, reports/validation/index.html"
	@echo "model:      models/mlflow_model (MLflow pyfunc)"
	@echo "MLflow:     $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1"
	@echo "register:   $(BIN)/python -m pipeline registry register && $(BIN)/dvc push   (rebuild: python -m pipeline reproduce models:/seqrec/N)"
	@echo "dvc.lock:   this run's record; leave it uncommitted, each registered version stores its own (docs/reproduce.md)"

test: $(STAMP)  ## set up, run the fast suite and the user journeys (real scheduler, Chromium); CI runs this
	$(BIN)/python -m pytest -m "not slow and not production" -q

test-production: $(STAMP)  ## the production profile on real servers: Postgres, S3, MLflow auth, Airflow LocalExecutor, DDP (CI runs this too)
	$(BIN)/python -m pytest -m production -q

test-fast: $(STAMP)  ## the fast suite only, for quick loops (no Airflow scheduler, no browser)
	$(BIN)/python -m pytest -m "not slow and not production and not journey" -q

screenshots: $(STAMP)  ## the browser journeys, writing their screenshots into docs/img (README, docs)
	SEQREC_SCREENSHOTS=docs/img $(BIN)/python -m pytest -m journey -q tests/journeys/test_approve_in_mlflow.py tests/journeys/test_approve_in_airflow.py

test-slow: $(STAMP)  ## the slow suites (retrain end to end with dag.test(), real datasets, auto-promotion under the scheduler)
	$(BIN)/python -m pytest -m slow -q

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check pipeline dags tests bench

bench: $(STAMP)  ## full benchmark suite (hours on 2 cores: 10M events, 3 dataset trainings), then docs/benchmarks.md
	$(BIN)/python -m bench speed --events 1000000 10000000
	$(BIN)/python -m bench training
	$(BIN)/python -m bench eval
	if [ -f models/mlflow_model/MLmodel ]; then $(BIN)/python -m bench serving --variants fp32,int8,compiled --package models/mlflow_model --sequences data/sequences; else $(BIN)/python -m bench serving --variants fp32,int8,compiled; fi
	$(BIN)/python -m bench repro
	for d in toys sports taobao synthetic; do $(BIN)/python -m bench quality --dataset $$d || exit 1; done
	$(BIN)/python -m bench report

bench-quick: $(STAMP)  ## small sizes of every speed suite (a few minutes), then docs/benchmarks.md
	$(BIN)/python -m bench speed --events 100000
	$(BIN)/python -m bench training --users 2000 --items 1000 --steps 12 --warmup 2
	$(BIN)/python -m bench eval --users 2000 --items 3000
	$(BIN)/python -m bench serving --items 3000 --single-repeats 100 --batch-users 200 --batch-repeats 3
	$(BIN)/python -m bench repro
	$(BIN)/python -m bench report

.PHONY: airflow
airflow: $(STAMP) .dvc/config  ## local Airflow 3 (standalone) + MLflow server on 127.0.0.1 (docs/airflow.md)
	SEQREC_BIN=$(abspath $(BIN)) bash scripts/airflow_local.sh

clean-state:  ## remove generated pipeline state (keeps .venv)
	rm -rf data/interim data/validated data/quarantine data/sequences models checkpoints reports plots metrics mlflow.db mlartifacts dvc.lock
