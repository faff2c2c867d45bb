# Two commands do everything on a fresh machine (Python >= 3.10, git, make):
#   make repro   create .venv, install pinned deps, run the whole DVC pipeline
#   make test    create .venv, install pinned deps + test deps, run the test suite
# Set CIFAR10_ARCHIVE=/path/to/cifar-10-python.tar.gz to use a local copy instead of downloading.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: repro test bench clean-venv

repro: $(VENV)/.runtime-installed
	dvc repro

test: $(VENV)/.test-installed
	python -m pytest

bench: $(VENV)/.test-installed
	python -m benchmarks.bench_train

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime-installed: requirements.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.test-installed: requirements.txt requirements-test.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements-test.txt
	touch $@ $(VENV)/.runtime-installed

clean-venv:
	rm -rf $(VENV)
