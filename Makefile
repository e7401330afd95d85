# Gatehouse: `make run` starts the platform, `make test` runs every check. See README.md.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 8000
export DJANGO_SETTINGS_MODULE := gatehouse.settings

.PHONY: install run migrate demo test lint typecheck security test-only clean bench bench-log soak

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found " + sys.version.split()[0] + ")")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The pip that venv bundles with Python 3.11.7 (23.2.1) has a known vulnerability
	# (PYSEC-2023-228, fixed in 23.3; make security reports it).
	$(BIN)/pip install --quiet --disable-pip-version-check "pip>=23.3"
	# torch first and pinned: anything else lets a dependency pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable

demo: migrate
	$(BIN)/python manage.py seed_demo

run: demo
	@echo ""
	@echo "Gatehouse is starting at http://127.0.0.1:$(PORT)/  (Ctrl-C stops web, worker and beat)"
	@echo ""
	GATEHOUSE_PORT=$(PORT) exec $(BIN)/honcho start -f Procfile

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy gatehouse apps

# bandit: high severity fails (config in pyproject.toml); pip-audit: see tools/pip_audit_gate.py
# (an unreachable vulnerability service is reported, and fails only with CI=true PIP_AUDIT_REQUIRED=1).
security: install
	$(BIN)/bandit -q -c pyproject.toml -r gatehouse apps --severity-level high
	$(BIN)/python tools/pip_audit_gate.py

test-only: install
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/pytest

test: lint typecheck security test-only

# Load benchmark: TorchServe direct vs Gatehouse predict (see bench/run.py, docs/performance.md).
# Dev tools only, never project dependencies: wrk (Debian package) and granian + py-spy installed
# with pip --target into var/bench-tools; without them it falls back to a Python load client,
# uvicorn and no profile.
BENCH_TOOLS := var/bench-tools
bench: install
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -qq wrk >/dev/null 2>&1 || \
		  { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; }; }; } || \
		echo "wrk is not installed: bench uses its multi-process Python client"
	@test -x $(BENCH_TOOLS)/bin/py-spy -a -d $(BENCH_TOOLS)/granian || \
		$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --target $(BENCH_TOOLS) \
			granian==2.8.9 py-spy==0.4.3 || \
		echo "granian/py-spy not installed: bench uses uvicorn and skips the profile"
	BENCH_TOOLS=$(BENCH_TOOLS) $(BIN)/python bench/run.py $(BENCH_ARGS)

# Decision log (gatehouse/tlog): sequencer integration rate over 200k queued leaves in a scratch
# SQLite database, and in a scratch PostgreSQL database (gatehouse_bench_log, created and dropped)
# when BENCH_LOG_DATABASE_URL is set or 127.0.0.1:5432 answers ("none" skips it); receipt fetch
# from that tree; proof sizes and verify times at 10^6 leaves, simulated in memory. Merge delay
# under load is measured by `make bench`. See bench/tlog.py, docs/performance.md.
bench-log: install
	$(BIN)/python bench/tlog.py $(BENCH_LOG_ARGS)

# Soak: >= 100k predictions against PostgreSQL + Redis (uvicorn workers, wrk); decision records
# == 2xx answers by request id, chain verified (see bench/soak.py, docs/performance.md).
# SOAK_DATABASE_URL / SOAK_REDIS_URL choose the servers; its database is dropped and recreated.
soak: install
	@command -v wrk >/dev/null || { echo "soak needs wrk (apt-get install wrk)"; exit 1; }
	BENCH_TOOLS=$(BENCH_TOOLS) $(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
