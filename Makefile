# The two commands of the README's quick start are `make demo` and `make test`; both set up .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test lint clean
.DEFAULT_GOAL := demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: anything else would pull a multi-GB CUDA build from the index.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,serve,recstore]'
	touch $(STAMP)

venv: $(STAMP)

## The whole pipeline on the built-in shop, then the server on the new champion, queried once.
demo: $(STAMP)
	$(BIN)/shoprec demo

## The test suite (CI runs this, then the container checks: make containers-test).
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not faults and not containers" tests

lint: $(STAMP)
	$(BIN)/ruff check shoprec components pipelines tests benchmarks
	$(BIN)/python -m pytest -q tests/test_layers.py tests/test_serving_imports.py

clean:
	rm -rf .shoprec build *.egg-info

-include mk/*.mk
