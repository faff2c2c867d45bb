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

.PHONY: repro test test-fast cifar10-full fuzz compare ci-browser rerun-check pr-report bench bench-sweep remote exp-run exp-gather clean-venv
.PHONY: results fault-suite-count bench-cnn bench-memory bench-blocks bench-conv bench-frontier bench-quickstart

# pr-report compares the workspace with this revision
BASE ?= main

repro: $(VENV)/.runtime-installed
	dvc repro

# the suite runs on $(TEST_WORKERS) worker processes (pytest-xdist), a module's tests on one worker
TEST_WORKERS ?= 2

test: $(VENV)/.test-installed
	ruff check .
	python -m pytest -n $(TEST_WORKERS) --dist loadscope

# the edit-test loop: lint, unit and fault tests; no end-to-end runs of the dvc CLI (tests/pipeline/)
test-fast: $(VENV)/.test-installed
	ruff check .
	python -m pytest -n $(TEST_WORKERS) --dist loadscope --ignore=tests/pipeline

# on GitHub's Ubuntu runners (.github/workflows/pipeline.yml): the preinstalled Chrome for
# tests/pipeline/test_plots_offline.py, which runs it in a user namespace without network
ci-browser:
	sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 || true
	echo "CHROMIUM=$$(command -v chromium || command -v google-chrome)" >> "$$GITHUB_ENV"

# the input readers' property-based tests with many more examples than `make test` runs
fuzz: $(VENV)/.test-installed
	HYPOTHESIS_PROFILE=long python -m pytest tests/stages/test_read.py

# experiments side by side on one screen: the params and metrics that differ between them, without
# DVC's bookkeeping columns, the dependencies' hashes and the DVCLive summary (once a run is done,
# the same numbers as model.*)
compare: $(VENV)/.runtime-installed
	dvc exp show --only-changed --no-pager --drop 'Created|parent|State|Executor|test\.(precision|recall)$$|(train|val)\.loss$$|val\.accuracy$$|step$$|(cifar10|stages|numpynet|models|data/.*)$$'


rerun-check: $(VENV)/.runtime-installed
	python -m tools.rerun_check

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
# (docs/dvc-workflows.md "Sharing results"; .github/workflows/sweep.yml). The URL goes to
# .dvc/config, where the server is (ENDPOINT_URL, for MinIO and the like) to .dvc/config.local;
# credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or `dvc remote modify --local`.
remote: $(VENV)/.s3-installed
	dvc remote add --force -d storage "$(REMOTE_URL)"
	if [ -n "$(ENDPOINT_URL)" ]; then dvc remote modify --local storage endpointurl "$(ENDPOINT_URL)"; fi

# one experiment on this machine: make exp-run EXP=name SET="-S train.learning_rate=0.05 ..."
# the frontier network on all ten classes, as an experiment of this workspace: airbench94's recipe
# for 5 epochs, its hyperparameters translated to a mean loss (docs/params.md); SEED=1 for another seed
SEED ?= 0
cifar10-full: $(VENV)/.runtime-installed
	dvc exp run -n "cifar10-full-seed$(SEED)" \
	  -S 'filter_normalize.classes=[airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck]' \
	  -S train.model=frontier -S 'train.conv_channels=[64,256,256]' -S train.batch_size=1024 \
	  -S train.epochs=5 -S train.learning_rate=1.5 -S train.momentum=0.85 -S train.nesterov=true \
	  -S train.weight_decay=0.00133 -S train.lr_schedule=airbench -S train.warmup_epochs=0 \
	  -S train.dropout=0 -S train.flip=true -S train.crop_padding=2 -S train.label_smoothing=0.2 \
	  -S train.lookahead=true -S train.restore_best=false -S train.seed=$(SEED) \
	  -S evaluate.flip_tta=true -S evaluate.translate_tta=true

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

# Measured numbers are written into the docs by the scripts that measure them (benchmarks/report.py):
# the README's results table (every configuration x seeds 0..2 on the real data, in a clone of HEAD;
# CIFAR10_ARCHIVE, else ../shared/cifar10/cifar-10-python.tar.gz) and the blocks of docs/performance.md.
results: $(VENV)/.runtime-installed
	python -m benchmarks.results $(RESULTS_ARGS)

bench-cnn: $(VENV)/.test-installed
	python -m benchmarks.bench_cnn --torch-python $(or $(TORCH_PYTHON),$(error give TORCH_PYTHON=<a Python with torch>))

bench-memory: $(VENV)/.test-installed
	python -m benchmarks.bench_memory

bench-blocks: $(VENV)/.test-installed
	python -m benchmarks.bench_blocks

bench-conv: $(VENV)/.test-installed
	python -m benchmarks.bench_conv --profile

bench-frontier: $(VENV)/.test-installed
	python -m benchmarks.bench_frontier $(if $(TORCH_PYTHON),--torch-python $(TORCH_PYTHON))

fault-suite-count: $(VENV)/.test-installed
	python -m benchmarks.fault_suite

bench-quickstart: $(VENV)/.test-installed
	python -m benchmarks.bench_quickstart

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
