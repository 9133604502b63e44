# Two commands set up a fresh machine and run scadm: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test setup
demo: $(STAMP)
	$(VENV)/bin/scadm demo --out out/demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest

setup: $(STAMP)

# torch is pinned to the CPU build first so that no CUDA build is pulled in by a dependency.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $(STAMP)
