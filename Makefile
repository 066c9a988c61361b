# convbench: `make bench` runs the default sweep, `make test` runs the tests.
# Both bootstrap .venv once (a stamp file): torch first (pick another build with TORCH=...),
# then the project with its dev extras.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.convbench-installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help setup bench bench-aa bench-perf bench-timer bench-gpu report compare test test-slow test-cluster test-networks test-all clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(STAMP) ## Create .venv once: torch (TORCH=... picks the build, default torch==2.13.0), then convbench

bench: $(STAMP) ## Run the default sweep; prints where the table and report are (ARGS= for overrides)
	$(PY) -m harness -m $(ARGS)

bench-perf: $(STAMP) ## Check the built-ins' speed targets against cudnn (issue #6)
	$(PY) -m harness.perf $(ARGS)

bench-aa: $(STAMP) ## A/A: the default sweep twice and compare (false alarms); A/B: a planted 1.3x and 1.1x slowdown
	$(PY) -m harness.aa $(ARGS)

bench-timer: $(STAMP) ## Check the harness's timing against a bare torch.utils.benchmark.Timer
	$(PY) -m harness.timer_agreement $(ARGS)

bench-gpu: $(STAMP) ## On a CUDA machine: tests, resnet50+kernels x 3 dtypes, timer, perf; one folder (ARGS=--dry-run)
	$(PY) -m harness.bench_gpu $(ARGS)

report: $(STAMP) ## Rebuild the report of a sweep: make report DIR=results/latest
	$(PY) -m harness.report $(or $(DIR),results/latest)

compare: $(STAMP) ## Compare two sweeps: make compare OLD=dir NEW=dir
	$(PY) -m harness.report.compare $(OLD) $(NEW) $(ARGS)

test: $(STAMP) ## Run the quick tests (about 6 minutes on a 2-core Xeon VM once set up)
	$(PY) -m pytest -q -m "not slow and not slurm and not ray and not networks" $(ARGS)

test-slow: $(STAMP) ## Run only the slow tests (the cluster tests are test-cluster's)
	$(PY) -m pytest -q -m "slow and not slurm and not ray and not networks" $(ARGS)

test-cluster: $(STAMP) ## README's SLURM and Ray commands on a real one-node SLURM (root: installs, starts, stops it) and a local Ray
	$(PY) -m pip install -q -e ".[dev,ray]"
	$(PY) -m pytest -q -m "slurm or ray" --durations=0 $(ARGS)

test-networks: $(STAMP) ## README's Hugging Face model commands (capture, sweep, swap check) on a real transformers ResNet-50
	$(PY) -m pip install -q -e ".[dev,networks]"
	$(PY) -m pytest -q -m networks --durations=0 $(ARGS)

test-all: $(STAMP) ## Run every test, slow, cluster and network ones included (CI runs each of those targets)
	$(PY) -m pytest -q $(ARGS)

clean: ## Remove the virtual environment and caches (results are kept)
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
