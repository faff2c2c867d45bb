# Two commands do everything on a fresh machine (Python >= 3.11, git, make):
#   make repro         create .venv, install pinned deps, run the whole DVC pipeline
#   make test          create .venv, install pinned deps + test deps, lint (ruff), run the test suite
# and, for CI and anyone who wants proof that the committed results reproduce:
#   make rerun-check   recompute every stage from the data in a clone of HEAD, compare metrics
# Set CIFAR10_ARCHIVE=/path/to/cifar-10-python.tar.gz to use a local copy instead of downloading.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin

export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: repro test rerun-check pr-report bench bench-sweep remote exp-run exp-gather clean-venv

# pr-report compares the workspace with this revision
BASE ?= main

repro: $(VENV)/.runtime-installed
	dvc repro

test: $(VENV)/.test-installed
	ruff check .
	python -m pytest

rerun-check: $(VENV)/.runtime-installed
	python -m stages.rerun_check

# params and metrics of the workspace against $(BASE) as markdown (also appended to the CI job
# summary), and a `dvc plots diff` page, all under pr-report/
pr-report: $(VENV)/.runtime-installed
	mkdir -p pr-report
	{ echo "## Params: $(BASE) vs this change"; dvc params diff $(BASE) --md; \
	  echo "## Metrics: $(BASE) vs this change"; dvc metrics diff $(BASE) --md; } > pr-report/diff.md
	cat pr-report/diff.md
	if [ -n "$$GITHUB_STEP_SUMMARY" ]; then cat pr-report/diff.md >> "$$GITHUB_STEP_SUMMARY"; fi
	dvc plots diff $(BASE) -o pr-report/plots

# An S3 (or S3-compatible) DVC remote, for sharing results and for experiments on many machines
# (README "Sharing results"; .github/workflows/sweep.yml). The URL goes to .dvc/config, where
# the server is (ENDPOINT_URL, for MinIO and the like) to .dvc/config.local; credentials come
# from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or `dvc remote modify --local`.
remote: $(VENV)/.s3-installed
	dvc remote add --force -d storage "$(REMOTE_URL)"
	if [ -n "$(ENDPOINT_URL)" ]; then dvc remote modify --local storage endpointurl "$(ENDPOINT_URL)"; fi

# one experiment on this machine: make exp-run EXP=name SET="-S train.learning_rate=0.05 ..."
exp-run: $(VENV)/.s3-installed
	dvc exp run --pull $(SET) -n "$(EXP)"
	dvc exp push origin "$(EXP)"

# gather experiments run elsewhere: make exp-gather EXPS="name1 name2"; their table to sweep-report.md
exp-gather: $(VENV)/.s3-installed
	for exp in $(EXPS); do dvc exp pull origin "$$exp" || exit 1; done
	dvc exp show --md --no-pager > sweep-report.md
	cat sweep-report.md
	if [ -n "$$GITHUB_STEP_SUMMARY" ]; then cat sweep-report.md >> "$$GITHUB_STEP_SUMMARY"; fi

bench: $(VENV)/.test-installed
	python -m benchmarks.bench_train $(if $(TORCH_PYTHON),--torch-python $(TORCH_PYTHON))

bench-sweep: $(VENV)/.test-installed
	python -m benchmarks.bench_sweep

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed, this is " + sys.version.split()[0] + "; run make PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime-installed: requirements.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.s3-installed: requirements.txt requirements-s3.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements-s3.txt
	touch $@ $(VENV)/.runtime-installed

$(VENV)/.test-installed: requirements.txt requirements-s3.txt requirements-test.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements-test.txt
	touch $@ $(VENV)/.runtime-installed $(VENV)/.s3-installed

clean-venv:
	rm -rf $(VENV)
