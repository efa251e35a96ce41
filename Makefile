# Two entry points (see README): `make demo` and `make test`.
# Both create .venv on first use and install the pinned environment (envs/requirements.lock.txt).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.gan2shape-installed
# `make demo` fixes the thread count: same seed + same threads = same numbers (results/reference/demo/)
DEMO_THREADS ?= 2
RUN    := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" OMP_NUM_THREADS=$(DEMO_THREADS) MKL_NUM_THREADS=$(DEMO_THREADS)

.PHONY: test test-all test-slurm env demo check-reference reference clean-env

$(STAMP): envs/requirements.lock.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r envs/requirements.lock.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

env: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

# one rule through a real single-node SLURM on localhost (root; Debian/Ubuntu's slurm-wlm)
test-slurm: $(STAMP)
	GAN2SHAPE_SLURM_APT=1 $(PY) -m pytest -q -m slow -s tests/test_slurm.py

# The synthetic world end to end on the CPU (params.yaml: dataset synthetic-face, preset demo):
# segment -> invert -> priors -> pretrain -> reconstruct -> evaluate -> figures -> results/report/index.html
# Outputs go to results/ (ignored by git, cached by DVC); `dvc commit` records them in dvc.lock so
# `dvc status` is clean and `dvc push` works; the last lines give the report and the numbers.
demo: $(STAMP)
	$(RUN) $(PY) workflow/scripts/demo_result.py watch -- $(VENV)/bin/snakemake all --cores 2 --resources gpu=1
	$(RUN) $(VENV)/bin/dvc commit --force --quiet pipeline
	@$(PY) workflow/scripts/demo_result.py show

# does results/metrics.json agree with the committed reference (results/reference/demo/)?
check-reference: $(STAMP)
	$(PY) workflow/scripts/demo_result.py check

# make the current results the committed reference (after `make demo` on the committed params.yaml)
reference: $(STAMP)
	$(RUN) $(PY) workflow/scripts/demo_result.py record

clean-env:
	rm -rf $(VENV)
