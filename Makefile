# The two commands a new user needs: `make demo` (the main job on the bundled data, CPU, minutes)
# and `make test` (the default test run). Both install into .venv first.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install demo test test-wheel test-all lint typecheck benchmark clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pmfm.train model=mlp

test: $(STAMP)
	$(BIN)/python -m pytest -n 2

# the package as users install it: a wheel in a fresh venv, run from another folder
test-wheel: $(STAMP)
	$(BIN)/python -m pytest -m slow tests/test_wheel.py

test-all: $(STAMP)
	$(BIN)/python -m pytest -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check pmfm tests
	$(BIN)/ruff format --check pmfm tests

typecheck: $(STAMP)
	$(BIN)/mypy

benchmark: $(STAMP)
	$(BIN)/python -m pmfm.benchmark

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
