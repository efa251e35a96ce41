# Two entry points (see README): `make demo` and `make test`.
# Both create .venv on first use and install the pinned environment (envs/requirements.lock.txt).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.gan2shape-installed

.PHONY: test test-all env demo clean-env

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

# The synthetic world end to end on the CPU (params.yaml: dataset synthetic-face, preset demo):
# segment -> invert -> priors -> pretrain -> reconstruct -> evaluate -> figures -> results/report/index.html
demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake all --cores 2 --resources gpu=1

clean-env:
	rm -rf $(VENV)
