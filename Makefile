# Two commands matter: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.bastion-installed

.PHONY: demo test lint bench bench-smoke install peers sdk1 postgres docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

peers:
	bash scripts/install-test-peers.sh

## make sdk1: the official MCP Python SDK 1.x client in tests/.venv-mcp1 (the e2e suite drives Bastion with it).
sdk1:
	PYTHON=$(PYTHON) bash scripts/install-sdk1-client.sh

postgres:
	bash scripts/ensure-postgres.sh

## make demo: Bastion in front of a real MCP server, an agent session through it, the audit trail verified.
demo: install peers
	$(PY) scripts/demo.py

## make test: lint and types, then the whole suite (unit, contract on SQLite and PostgreSQL, end-to-end with real peers).
test: install peers sdk1 postgres lint
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check src bench
	$(PY) -m mypy src bench

bench: install peers
	$(PY) bench/run.py

bench-smoke: install peers
	$(PY) bench/run.py --smoke

docs: install
	$(PY) scripts/gen_config_reference.py

clean:
	rm -rf $(VENV) tests/.venv-mcp1 tests/node/node_modules .pytest_cache .demo
