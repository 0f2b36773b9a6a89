# make test   - lint, type-check and run every test (sets everything up itself)
# make demo   - run the bookstore's scripted fault scenario (docs/bookstore.md)
# make bookstore - start the bookstore on 127.0.0.1 and keep it running
# make bench  - run the benchmarks and write docs/benchmarks.md
# make soak   - run the long fault runs (tests/faults/ at scale) and write docs/reliability.md
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := dev,bench,demo

.PHONY: test demo bookstore bench soak lint typecheck pytest system-packages protos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Debian packages the tests and benchmarks run against (real servers on loopback).
system-packages:
	@./scripts/ensure-system-packages.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples protos
	$(BIN)/ruff format --check src tests bench examples protos

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) system-packages
	$(BIN)/pytest -q

test: lint typecheck pytest

# The whole bookstore as processes on 127.0.0.1, four phases of faults, a report; about 40 s.
demo: $(STAMP)
	$(BIN)/python -m microcall.demo.bookstore scenario --report bookstore-report.html

bookstore: $(STAMP)
	$(BIN)/python -m microcall.demo.bookstore up

bench: $(STAMP) system-packages
	$(BIN)/python -m bench

# A few minutes: a 100,000-call soak with faults, 10,000 cancellations, the fault matrix x10.
soak: $(STAMP)
	$(BIN)/python -m bench.soak

# Regenerate the example gRPC code (src/microcall/examples_pb/, committed) from protos/.
protos: $(STAMP)
	$(BIN)/python protos/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
