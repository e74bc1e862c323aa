# Two entry points: `make demo` (the end-to-end pipeline on the built-in corpus) and
# `make test`. Both create the virtual environment on first use.
# TORCH is installed first so that the CPU wheel is chosen where one is at hand;
# override it (e.g. `make TORCH=torch demo`) to take whatever build suits your machine.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/interp demo

test: $(STAMP)
	bash scripts/install_browser.sh
	$(PY) -m ruff check interp sae scripts tests
	$(PY) -m ruff format --check interp sae scripts tests
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) artifacts reports/demo
