# The two quick-start commands: `make demo` (install, start the embedded model server, build a
# taxonomy from examples/, write out/reviews/taxonomy.html) and `make test` (install, run the tests).
# `make lint`: ruff (lint and format) and mypy, as CI runs them before the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# llama.cpp's AMX code path crashes on some CPUs when built with -march=native: build without it.
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF "-DCMAKE_C_FLAGS=$(NO_AMX)" "-DCMAKE_CXX_FLAGS=$(NO_AMX)"
STAMP := $(VENV)/.clado-installed

.PHONY: install demo lint test

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' $(PY) -m pip install --quiet -e ".[local,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/clado build examples/reviews.jsonl --out out/reviews
	@echo "Open out/reviews/taxonomy.html in a browser."

lint: $(STAMP)
	$(VENV)/bin/ruff check clado tests benchmarks
	$(VENV)/bin/ruff format --check clado tests benchmarks
	$(VENV)/bin/mypy

test: $(STAMP)
	$(PY) -m pytest
