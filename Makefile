# The same commands run on a laptop and in CI (.ci/run). Only Python 3.11+ and make are needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint fmt fuzz bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed  ## migrate the embedded SQLite database and serve the example bot
	$(BIN)/chatops migrate
	$(BIN)/chatops serve --host $(HOST) --port $(PORT)

# Test processes (pytest-xdist). The suite mostly waits on the servers and browsers it starts, so more processes
# than cores pay off; TEST_PROCESSES=0 runs it in this one process.
TEST_PROCESSES ?= 4

test: $(VENV)/.installed-dev  ## the whole suite (PostgreSQL too when CHATOPS_TEST_DATABASE_URL is set)
	$(BIN)/pytest -n $(TEST_PROCESSES)

fuzz: $(VENV)/.installed-dev  ## the webhook fuzz suite's long profile (minutes; CI runs a few seconds of it)
	CHATOPS_FUZZ=long $(BIN)/pytest tests/test_webhooks_fuzz.py --timeout=0 -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.installed-dev  ## benchmarks; results appended to bench/RESULTS.md
	$(BIN)/python -m bench

bench-quick: $(VENV)/.installed-dev
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache chatops.db chatops.db-wal chatops.db-shm
