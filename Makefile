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

.PHONY: help install run test test-slow lint bench clean-state

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "seqrec needs Python 3.11, got " + sys.version' 
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install seqrec with its pinned dependencies

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

test: $(STAMP)  ## set up and run the default test suite (CI runs this)
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)  ## the slow suites (real Airflow scheduler, real datasets, resume)
	$(BIN)/python -m pytest -m slow -q

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check pipeline dags tests bench

.PHONY: airflow
airflow: $(STAMP) .dvc/config  ## local Airflow 3 (standalone) + MLflow server on 127.0.0.1 (docs/airflow.md)
	SEQREC_BIN=$(abspath $(BIN)) bash scripts/airflow_local.sh

clean-state:  ## remove generated pipeline state (keeps .venv)
	rm -rf data/interim data/validated data/quarantine data/sequences models checkpoints reports plots metrics mlflow.db mlartifacts dvc.lock
