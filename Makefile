# The two commands of the README: `make run` and `make test`. Both create the
# virtual environment at .venv/ on first use (`make VENV=/tmp/gw test` puts it elsewhere).
# It is installed from requirements.lock, hash-checked; `make lock` refreshes the lock
# after a change to pyproject.toml's dependencies.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
HOST   ?= 127.0.0.1
PORT   ?= 8080

# `make run` serves the bundled demo upstream; `make run UPSTREAM=http://host:8000/v1`
# or `make run CONFIG=gateway.toml` serves a real one.
ifdef CONFIG
RUN_ARGS := --config $(CONFIG)
else ifdef UPSTREAM
RUN_ARGS := --host $(HOST) --port $(PORT) --upstream $(UPSTREAM)
else
RUN_ARGS := --host $(HOST) --port $(PORT)
endif

# The lock tool, used by `make lock` only, from a throwaway venv. LOCK_ARGS=--upgrade
# takes the newest release of everything, LOCK_ARGS='-P NAME' of one package; without
# them the pins already in the lock are kept wherever pyproject.toml still allows them.
UV_VERSION ?= 0.13.8
LOCK_ARGS  ?=

# `make e2e`: the end-to-end tests with real third-party clients (tests/e2e), after
# installing them under .e2e/ (git-ignored): the Codex CLI, pinned to an exact release.
CODEX_VERSION ?= 0.171.0
E2E   := .e2e
CODEX := $(E2E)/node_modules/.bin/codex

.PHONY: install lock run test bench check clean e2e

# The lock pins pip and setuptools as well: the venv's own pip installs it (and with it
# the pinned pip), and the project goes in editable with the locked setuptools, without
# build isolation, so that no file comes unchecked. --only-binary keeps it so: building
# an sdist would fetch its build requirements without hashes.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes --only-binary :all: -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Resolves pyproject.toml's dependencies with the test and dev extras, its
# [build-system] requires and pip, for CPython 3.11 on Linux, into $(LOCK) with the
# hashes of every file of each pinned release.
lock:
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/python" -m pip install -q uv==$(UV_VERSION) && \
	{ test ! -f $(LOCK) || cp $(LOCK) "$$tmp/lock"; } && \
	{ echo pip; "$$tmp/venv/bin/python" -c 'import tomllib; \
	    print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'; } | \
	"$$tmp/venv/bin/uv" pip compile -q pyproject.toml - --extra test --extra dev \
	    --generate-hashes --python-version 3.11 --python-platform linux \
	    --custom-compile-command 'make lock' $(LOCK_ARGS) -o "$$tmp/lock" && \
	{ printf '%s\n' \
	    '# Every package that `make install` (and so run/test/bench/check) puts in the venv,' \
	    '# pinned with the hashes of its files: the dependencies of pyproject.toml with its' \
	    '# test and dev extras, its build backend (setuptools) and pip, resolved for' \
	    '# CPython 3.11 on Linux. Installed with `pip install --require-hashes -r' \
	    '# requirements.lock`. Do not edit: change pyproject.toml, then run `make lock`' \
	    '# (uv pip compile; see the Makefile).' \
	    '#'; \
	  cat "$$tmp/lock"; } > $(LOCK)

run: $(STAMP)
	$(BIN)/python -m gateway serve $(RUN_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(TEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# A stamp per version: changing CODEX_VERSION installs that release.
$(E2E)/codex-$(CODEX_VERSION):
	mkdir -p $(E2E)
	npm install --prefix $(E2E) --no-audit --no-fund --loglevel=error --save-exact \
	    @openai/codex@$(CODEX_VERSION)
	$(CODEX) --version | grep -qx 'codex-cli $(CODEX_VERSION)'
	touch $@

e2e: $(STAMP) $(E2E)/codex-$(CODEX_VERSION)
	CODEX_BIN=$(abspath $(CODEX)) $(BIN)/python -m pytest tests/e2e $(TEST_ARGS)

check: $(STAMP)
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(E2E) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
