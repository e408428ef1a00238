# Ledgerline developer commands. Needs only Python 3.11+ and make; uv is
# installed with pip when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(PYTHON) -m uv

.PHONY: install run test lint fmt lock bench clean proto proto-check deploy-check stack-up stack-down

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

lint: $(BIN)/ledgerline proto-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(BIN)/ledgerline
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(BIN)/ledgerline
	@command -v wrk >/dev/null 2>&1 || { echo "bench needs wrk: apt-get install -y wrk"; exit 2; }
	@command -v pgbench >/dev/null 2>&1 || { echo "bench needs pgbench: apt-get install -y postgresql-client"; exit 2; }
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.payments

# requirements-runtime.lock is the runtime part of requirements.lock (the
# same versions and hashes), what the container image installs.
lock: $(BIN)/python
	$(UV) pip compile --quiet pyproject.toml --all-extras --generate-hashes -o requirements.lock
	$(UV) pip compile --quiet pyproject.toml --generate-hashes -c requirements.lock \
		-o requirements-runtime.lock

# The deployment files (docker/, deploy/): hadolint, the Compose schema,
# the Kubernetes schemas, the alert rules and the dashboard. No Docker engine,
# cluster or network needed.
deploy-check: $(BIN)/ledgerline
	$(BIN)/python -m deploy.check

# The full local stack (docker/compose.yaml): needs a Docker engine.
COMPOSE = docker compose -f docker/compose.yaml
stack-up:
	$(COMPOSE) up -d --build

stack-down:
	$(COMPOSE) down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# gRPC: the code generated from api/proto is committed (src/ledgerline/v1,
# with typed stubs for grpc.aio); `make lint` fails when it is stale.
PROTOS := $(sort $(wildcard api/proto/ledgerline/v1/*.proto))
PROTOC  = $(BIN)/python -m grpc_tools.protoc -I api/proto \
	--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
	--mypy_grpc_opt=only_async
GENERATED_NOTE = '"""Generated from api/proto/ledgerline/v1 by `make proto`: do not edit."""'

define generate_proto
	rm -rf $(1)/ledgerline/v1 && mkdir -p $(1)/ledgerline/v1
	$(PROTOC) --python_out=$(1) --grpc_python_out=$(1) --mypy_out=$(1) --mypy_grpc_out=$(1) \
		$(PROTOS) >/dev/null
	echo $(GENERATED_NOTE) > $(1)/ledgerline/v1/__init__.py
endef

proto: $(BIN)/ledgerline
	$(call generate_proto,src)

proto-check: $(BIN)/ledgerline
	@rm -rf .proto-check
	@$(call generate_proto,.proto-check)
	@diff -r .proto-check/ledgerline/v1 src/ledgerline/v1 \
		|| { echo "the generated gRPC code is stale: run make proto and commit it"; \
		     rm -rf .proto-check; exit 1; }
	@rm -rf .proto-check
