# One-command set-up: `make demo` and `make test` create .venv/ if missing and install into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)

.PHONY: demo test lint bench install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e ".[train,dev,mnist,rtl]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgekd demo

test: $(STAMP)
	$(BIN)/ruff check edgekd tests tools
	$(BIN)/python -m pytest -q -x --timeout=600

lint: $(STAMP)
	$(BIN)/ruff check edgekd tests tools

bench: $(STAMP)
	$(BIN)/python tools/bench.py

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
