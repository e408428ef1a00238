# Ledgerline developer commands. Needs only Python 3.11+ and make; uv is
# installed with pip when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(PYTHON) -m uv

.PHONY: install run test lint fmt lock bench clean

$(BIN)/python:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv \
		|| $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)

install: $(BIN)/python
	$(UV) pip sync --quiet --python $(BIN)/python requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .

$(BIN)/ledgerline: pyproject.toml requirements.lock
	$(MAKE) install

run: $(BIN)/ledgerline
	$(BIN)/ledgerline serve

test: $(BIN)/ledgerline
	$(BIN)/pytest

lint: $(BIN)/ledgerline
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(BIN)/ledgerline
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(BIN)/ledgerline
	@command -v wrk >/dev/null 2>&1 || { echo "bench needs wrk: apt-get install -y wrk"; exit 2; }
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.payments

lock: $(BIN)/python
	$(UV) pip compile --quiet pyproject.toml --all-extras --generate-hashes -o requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
