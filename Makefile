# The two fresh-machine commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast lint format demo bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

test: install                 ## the whole suite (what CI runs)
	$(PY) -m pytest

test-fast: install            ## skip the slow end-to-end tests
	$(PY) -m pytest -m "not slow"

LINTED := spos_hw tests bench

lint: install                 ## ruff: lint and formatting (what CI checks before the tests)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

format: install               ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format $(LINTED)
	$(VENV)/bin/ruff check --fix $(LINTED)

FASHION := /usr/share/datasets/fashion-mnist

demo: install                 ## the whole pipeline on the built-in default (Fashion-MNIST, ~10 min)
	@test -d $(FASHION) || { command -v apt-get >/dev/null && \
	  { apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || sudo -n apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; } || true
	@test -d $(FASHION) || echo "warning: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); the demo falls back to scikit-learn's digits"
	$(VENV)/bin/spos-hw demo --workdir demo --budget quick

bench: install
	$(PY) bench/flops_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
