# Quick start: `make demo` then `make test`. Both build .venv on a fresh machine.
#
# torch comes from your pip index unless TORCH_INDEX names another. By default that is
# torch==2.13.0 from whatever pip is configured with: on the development and CI machines a
# local copy of the CPU build (they reach no other index); on an ordinary Linux machine PyPI's
# CUDA build, with the nvidia-* CUDA libraries and triton (several GB). For the CPU build there:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu     # 192 MB wheel, 754 MB installed
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cu126   # a CUDA 12.6 build
#   make demo TORCH_SPEC='torch>=2.6'                               # another torch release
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck docs docs-figures bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.app-installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q '$(TORCH_SPEC)' $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[app]'
	touch $@

# The dev extra is large (about 2 GB with the CPU torch): jax, optax, Lightning, transformers,
# the zclip/autoclip/pytorch-optimizer references, TensorBoard, mkdocs, build and twine.
$(VENV)/.dev-installed: $(VENV)/.app-installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.app-installed
	$(BIN)/gradclip demo

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests benchmarks examples scripts

# mypy over src/gradclip: strict on the library, basic on app/ (pyproject.toml [tool.mypy]).
typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

# The docs site into site/ (the tests build it again with --strict: tests/contracts/test_docs_site.py).
docs: $(VENV)/.dev-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Rerun what the docs publish (the demo table and figure, the quick benchmark, the advice check):
# real runs, their command, versions and date recorded beside the results (docs/generated/,
# docs/benchmark/). Takes about 50 minutes on 2 quiet cores.
docs-figures: $(VENV)/.app-installed
	$(BIN)/python scripts/docs_figures.py

test: $(VENV)/.dev-installed lint typecheck
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	$(BIN)/python -m pytest -q

bench: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks.clip

clean:
	rm -rf $(VENV) build dist site *.egg-info src/*.egg-info
