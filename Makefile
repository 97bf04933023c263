# The two quick-start commands: `make demo` (install, start the embedded model server, build a
# taxonomy from examples/, write out/reviews/taxonomy.html) and `make test` (install, run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.clado-installed

.PHONY: install demo test

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(PY) -m pip install --quiet -e ".[local,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/clado build examples/reviews.jsonl --out out/reviews
	@echo "Open out/reviews/taxonomy.html in a browser."

test: $(STAMP)
	$(PY) -m pytest
