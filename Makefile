# The two fresh-machine commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast demo bench clean

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

demo: install                 ## the whole pipeline on the built-in default
	$(VENV)/bin/spos-hw spaces
	$(VENV)/bin/spos-hw info 2,1,0,1,2,0,2,0,2,0,2,3,0,0,0,0,3,2,3,3 --space shufflenetv2-imagenet

bench: install
	$(PY) bench/flops_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
