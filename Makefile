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

# System services the tests start themselves (PostgreSQL binaries from Debian, the Kafka
# broker from Maven Central).
services:
	bash scripts/install-services.sh
	bash scripts/install-kafka.sh

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

# The peers measured against (dlt, dbt) live in their own environment: their pins are not ours.
# dbt-core 1.12 requires dbt-core-experimental-parser (only for its opt-in v2 parser), whose
# build downloads from outside the package registries: their other requirements are listed
# here, then dbt-core and dbt-duckdb are installed without dependencies.
PEERS := .venv-peers
$(PEERS)/.installed-2:
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet --upgrade pip
	$(PEERS)/bin/pip install --quiet "dlt[deltalake]==1.31.0" pandas sqlalchemy psycopg2-binary
	$(PEERS)/bin/pip install --quiet "quixstreams==3.28.1"
	$(PEERS)/bin/pip install --quiet "agate>=1.7,<1.15" "click>=8.3,<9" "daff>=1.3.46" \
		"dbt-adapters>=1.24.5,<2" "dbt-common>=1.37.5,<2" "dbt-extractor>=0.5,<=0.6" \
		"dbt-protos>=1.0.514,<2" "jinja2>=3.1.3,<4" "jsonschema>=4.19.1,<5" \
		"mashumaro[msgpack]>=3.9,<3.18" "metricflow>=0.213,<1" "networkx>=2.3,<4" \
		"opentelemetry-api>=1.26,<2" "packaging>20.9" "pathspec>=0.9,<1.1" "protobuf>=6,<8" \
		"pydantic<3" "python-dotenv>=1.2" pytz "pyyaml>=6" "requests<3" \
		"snowplow-tracker>=1.0.2,<2" "sqlparse>=0.5.5,<0.7" "typing-extensions>=4.4" duckdb
	$(PEERS)/bin/pip install --quiet --no-deps "dbt-core==1.12.6" "dbt-duckdb==1.11.1"
	touch $@

bench: install services $(PEERS)/.installed-2
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(PEERS) demo-shop bench/.data .pytest_cache .mypy_cache .ruff_cache
