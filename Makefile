# Two commands do everything on a fresh Debian/Ubuntu machine: `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint typecheck unit bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/comptoir demo --to build/demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q

test: lint typecheck unit

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
