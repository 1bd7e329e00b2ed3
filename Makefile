# One command each: `make test` runs the whole suite, `make setup` only installs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint bench validate demo dev dagster-home

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

test: lint
	$(BIN)/pytest

# ruff, the import contract of the layers (pyproject.toml, [tool.importlinter]), and dg's check
# that the code location loads ([tool.dg]).
lint: setup dagster-home
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/dg check defs

# Dagster commands run on the embedded instance under .data/dagster unless DAGSTER_HOME is set
# (deploy/dagster.yaml is the production instance on dagster-postgres; the top-level dagster.yaml
# is what Dagster's CLI reads in this folder when DAGSTER_HOME is unset).
export DAGSTER_HOME ?= $(abspath .data/dagster)

# The instance's folder, made as the app makes the embedded one (telemetry off); a dagster.yaml
# already there is left as it is.
dagster-home:
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || printf "telemetry:\n  enabled: false\n" > $(DAGSTER_HOME)/dagster.yaml

validate: setup dagster-home
	$(BIN)/dagster definitions validate -w workspace.yaml

bench: setup
	$(BIN)/python -m benchmarks.bench_flows

# The whole story on the embedded default: user, graph subscription, signed webhook to the real
# app, live SSE progress, a forked subgraph, sec repository access. Works again and again.
demo: setup
	$(BIN)/provisioning-pipelines demo

# The Dagster UI and daemon (http://127.0.0.1:3000) plus the API (http://127.0.0.1:8000).
dev: setup
	$(BIN)/provisioning-pipelines dev --port 8000 --dagster-port 3000
