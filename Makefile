# Efficient Federated Learning -- one command to render the course, one to test it.
#   make course   run every notebook headless -> build/ (executed notebooks, HTML, results.json)
#   make test     unit tests + every notebook under nbval + papermill tests
#   make bench    benchmarks -> benchmarks/results/*.json
#   make student  student versions (nbgrader's release) -> build/student/
#   make classroom        nbgrader course (source/, release/, SQLite gradebook) -> build/classroom/
#   make classroom-check  autograde 3 submissions per notebook with nbgrader, print the score table
#   make lab      JupyterLab on notebooks/
# Each target builds .venv (pip install -e .[dev]) unless a virtualenv is already active.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv

ifdef VIRTUAL_ENV
PY := python
ENV_STAMP := $(VIRTUAL_ENV)/.fedlab-installed
else
PY := $(VENV)/bin/python
ENV_STAMP := $(VENV)/.fedlab-installed
endif

export PYTHONHASHSEED := 0
export FEDLAB_PROGRESS ?= 0
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: env course test unit notebooks bench bench-claims student classroom classroom-check lab clean

env: $(ENV_STAMP)

$(ENV_STAMP): pyproject.toml
ifndef VIRTUAL_ENV
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
endif
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

course: $(ENV_STAMP)
	$(PY) -m fedlab_utils run --out build

# Tests run in TEST_JOBS processes (pytest-xdist), one notebook or test file per process
# (--dist loadfile keeps a notebook's cells in one kernel), one torch thread each so the
# processes do not oversubscribe the cores. TEST_JOBS=1 runs them serially.
TEST_JOBS ?= 2
test: $(ENV_STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
		-p no:cacheprovider -n $(TEST_JOBS) --dist loadfile

unit: $(ENV_STAMP)
	$(PY) -m pytest tests

notebooks: $(ENV_STAMP)
	$(PY) -m pytest notebooks --nbval-lax --nbval-current-env

bench: $(ENV_STAMP)
	$(PY) benchmarks/run.py

# Only the claims benchmark: every notebook on seeds 0-19 -> benchmarks/results/claims.json
bench-claims: $(ENV_STAMP)
	$(PY) benchmarks/bench_claims.py

student: $(ENV_STAMP)
	$(PY) -m fedlab_utils student --out build/student

classroom: $(ENV_STAMP)
	$(PY) -m fedlab_utils classroom --out build/classroom

classroom-check: $(ENV_STAMP)
	$(PY) -m fedlab_utils classroom --grade-check --out build/classroom-check

lab: $(ENV_STAMP)
	FEDLAB_PROGRESS=1 $(PY) -m jupyter lab notebooks/

clean:
	rm -rf build
