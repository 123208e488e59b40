# The two commands of the README: `make run` and `make test`. Both create the
# virtual environment at .venv/ on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
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

.PHONY: install run test bench check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m gateway serve $(RUN_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(TEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

check: $(STAMP)
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
