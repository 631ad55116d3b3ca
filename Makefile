# lakebed — `make demo` builds the sample lakehouse; `make test` runs every check.
# Both work on a fresh machine: they create .venv, install, and start what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install services demo test lint typecheck unit bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# System services the tests start themselves (PostgreSQL binaries from Debian).
services:
	bash scripts/install-services.sh

demo: install
	rm -rf demo-shop
	$(BIN)/lakebed demo demo-shop

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

unit: install services
	$(BIN)/pytest -q

test: lint typecheck unit

# The peers measured against (dlt) live in their own environment: their pins are not ours.
PEERS := .venv-peers
$(PEERS)/.installed:
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet --upgrade pip
	$(PEERS)/bin/pip install --quiet "dlt[deltalake]==1.31.0" pandas sqlalchemy psycopg2-binary
	touch $@

bench: install services $(PEERS)/.installed
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(PEERS) demo-shop bench/.data .pytest_cache .mypy_cache .ruff_cache
