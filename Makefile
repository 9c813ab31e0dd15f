# Quick start: `make demo` then `make test`. Both build .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.app-installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[app]'
	touch $@

$(VENV)/.dev-installed: $(VENV)/.app-installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.app-installed
	$(BIN)/gradclip demo

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests benchmarks examples scripts

test: $(VENV)/.dev-installed lint
	$(BIN)/python -m pytest -q

bench: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks.clip

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
