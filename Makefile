# The README's commands. Each target sets up what it needs: a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
export ORDERCANCEL_ENVIRONMENT ?= sandbox
# make bench also measures PostgreSQL here (a scratch database is created); empty it to skip.
BENCH_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: install run test test-fast check lint format clean bench dist deploy-check

# The client is its own distribution (client/), which the server's requires at the same version:
# both are installed editable, in one pip run, so the requirement is met by the working tree.
$(BIN)/.installed: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./client -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# make run keeps its database in the clone (var/), and hands the demo's API code to the server
# (through var/demo.env) so that the sandbox's demo pages can offer it.
RUN_DATABASE_URL ?= sqlite:///$(CURDIR)/var/ordercancel.db

run: install
	$(BIN)/ordercancel db upgrade --database-url '$(RUN_DATABASE_URL)'
	$(BIN)/ordercancel demo --database-url '$(RUN_DATABASE_URL)' --host $(HOST) --port $(PORT) --env-file var/demo.env
	. ./var/demo.env && exec $(BIN)/ordercancel serve --database-url '$(RUN_DATABASE_URL)' --host $(HOST) --port $(PORT)

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

# The lane to run while editing: SQLite and in-thread servers only (no browser, PostgreSQL or `serve` subprocess).
test-fast: install
	$(BIN)/pytest -q -m "not postgres and not browser and not subprocess" $(PYTEST_ARGS)

check: install
	$(BIN)/ruff check src tests bench deploy
	$(BIN)/ruff format --check src tests bench deploy
	$(BIN)/mypy
	$(BIN)/mypy --strict bench
	$(BIN)/mypy --strict deploy/check.py
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix src tests bench deploy
	$(BIN)/ruff format src tests bench deploy

# Seed, serve and load the service; print the table (ARGS=--quick for about a minute).
bench: install
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python bench/bench.py $(if $(BENCH_POSTGRES_URL),--database-url $(BENCH_POSTGRES_URL)) $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache dist client/dist

# Wheels and sdists of both distributions, ordercancel and ordercancel-client, into dist/.
dist: install
	rm -rf dist build client/build src/*.egg-info client/src/*.egg-info
	$(BIN)/python -m build --outdir dist client
	$(BIN)/python -m build --outdir dist .
	@ls -l dist

# The deployment in deploy/, run for real on loopback: PostgreSQL, two serve processes, nginx, prometheus.
DEPLOY_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
deploy-check: install
	$(BIN)/python deploy/check.py --postgres-url $(DEPLOY_POSTGRES_URL) $(ARGS)

# Hardening (issue 6): the long runs behind the README's Security figures.
.PHONY: fuzz crash soak

fuzz: install
	ORDERCANCEL_FUZZ_EXAMPLES=$${ORDERCANCEL_FUZZ_EXAMPLES:-1500} ORDERCANCEL_PROPERTY_EXAMPLES=$${ORDERCANCEL_PROPERTY_EXAMPLES:-5000} \
	  $(BIN)/pytest -s tests/test_fuzz_openapi.py tests/test_codec_properties.py tests/test_hostile_input.py

crash: install
	ORDERCANCEL_CRASH_KILLS=$${ORDERCANCEL_CRASH_KILLS:-25} $(BIN)/pytest -s tests/test_crash_consistency.py

soak: install
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# Issue 12: today's tree against BASE (a git ref), alternately, in one run (COMPARE_ARGS=--rounds 5 ...).
BASE ?= main
.PHONY: bench-compare
bench-compare: install
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python -m bench.compare --base $(BASE) $(COMPARE_ARGS)
