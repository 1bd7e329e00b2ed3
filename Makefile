# One command each: `make test` runs the whole suite, `make setup` only installs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint bench validate

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .

# Dagster commands run on the embedded instance under .data/dagster unless DAGSTER_HOME is set
# (the top-level dagster.yaml is the production instance on dagster-postgres).
export DAGSTER_HOME ?= $(abspath .data/dagster)

validate: setup
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || printf "telemetry:\n  enabled: false\n" > $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster definitions validate -w workspace.yaml

bench: setup
	$(BIN)/python -m benchmarks.bench_flows
