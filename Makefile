# Two commands for a fresh clone (README): `make demo` runs last month's billing against the
# bundled sandbox on the embedded defaults; `make test` runs the test suite. Both install into
# .venv themselves; nothing has to be installed by hand beyond Python 3.11 and make.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= .demo
PORT ?= 3000
export DAGSTER_HOME ?= $(abspath $(DEMO_DIR))/dagster_home

.PHONY: install demo ui serve test clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Bill last month from generated data served by the local sandbox; prints the invoices.
demo: install
	$(VENV)/bin/sync-pipelines demo --dir $(DEMO_DIR)

## Same data, then keep the sandbox and the Dagster UI running (http://127.0.0.1:$(PORT); `make ui PORT=3001`).
ui: install
	$(VENV)/bin/sync-pipelines demo --dir $(DEMO_DIR) --ui --ui-port $(PORT)

## Dagster UI + daemon + webhook receiver + sandbox with generated data, wired together (a trial).
serve: install
	$(VENV)/bin/sync-pipelines serve --sandbox --dir $(DEMO_DIR) --port $(PORT)

## The whole test suite (PostgreSQL tests run when SYNC_TEST_DATABASE_URL is set).
test: install
	$(PY) -m pytest -q -n 2 sync_pipelines_tests

clean-demo:
	rm -rf $(DEMO_DIR)
