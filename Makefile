# One-command entry points. See README.md.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
MLFLOW_PORT ?= 5000
CONFIG ?= config/config.yaml
# pip reads wheels from this machine's disk for torch==2.13.0 (CPU); install it before anything
# that depends on torch, or pip pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test test-unit lint dryrun report mlflow-ui benchmarks clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/snakemake --profile profiles/laptop --configfile $(CONFIG) --cores $(CORES)
	$(BIN)/snakemake --profile profiles/laptop --configfile $(CONFIG) --cores $(CORES) --report results/report.html

test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --profile profiles/slurm --configfile config/config.yaml --dry-run --quiet rules

test-unit: install
	$(BIN)/python -m pytest tests -m "not slow"

lint: install
	$(BIN)/lint-imports
	$(BIN)/snakemake --lint

dryrun: install
	$(BIN)/snakemake --profile profiles/slurm --configfile $(CONFIG) --dry-run

report: install
	$(BIN)/snakemake --profile profiles/laptop --configfile $(CONFIG) --cores $(CORES) --report results/report.html

mlflow-ui: install
	$(BIN)/python -m pipeline.tracking ui --config $(CONFIG) --port $(MLFLOW_PORT)

benchmarks: install
	$(BIN)/python benchmarks/run_all.py --config $(CONFIG)

clean:
	rm -rf results .snakemake

# MLflow tracking server for cluster runs (README, SLURM section): point mlflow.tracking_uri at
# http://<this host>:$(MLFLOW_PORT). One server process owns the SQLite store, so many jobs can log at once.
MLFLOW_SERVER_STORE ?= results/mlflow-server.db
MLFLOW_SERVER_HOST ?= 0.0.0.0
.PHONY: mlflow-server
mlflow-server: install
	mkdir -p $(dir $(MLFLOW_SERVER_STORE))
	$(BIN)/mlflow server --backend-store-uri sqlite:///$(abspath $(MLFLOW_SERVER_STORE)) --host $(MLFLOW_SERVER_HOST) --port $(MLFLOW_PORT)
