# Efficient Federated Learning -- one command to render the course, one to test it.
#   make course   run every notebook headless -> build/ (executed notebooks, HTML, results.json)
#   make test     lint + unit tests + papermill tests (not those marked slow)
#   make slow-check  the slow tests + every notebook under nbval (CI runs it after make test)
#   make bench    benchmarks -> benchmarks/results/*.json
#   make student  student versions (nbgrader's release) -> build/student/
#   make classroom        nbgrader course (source/, release/, SQLite gradebook) -> build/classroom/
#   make classroom-check  autograde 3 submissions per notebook with nbgrader, print the score table
#   make lab      JupyterLab on notebooks/
# LANG=zh picks the Chinese edition (notebooks/zh/): `make course LANG=zh` -> build/zh/,
# `make lab LANG=zh` opens notebooks/zh/, `make classroom LANG=zh` -> build/zh/classroom/.
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

# The edition: LANG is also the shell's locale (e.g. C.UTF-8), so only LANG=zh selects Chinese; the
# commands it runs then get a real locale back (LANG=zh is none) and FEDLAB_LANG=zh for runtime text.
EDITION := $(if $(filter zh zh_CN zh_CN.UTF-8,$(LANG)),zh,en)
ifeq ($(EDITION),zh)
EDITION_ENV := LANG=C.UTF-8 FEDLAB_LANG=zh
EDITION_DIR := notebooks/zh/
EDITION_BUILD := build/zh
else
EDITION_ENV :=
EDITION_DIR := notebooks/
EDITION_BUILD := build
endif
# nbval executes the English notebooks and the Chinese 00 (the other Chinese notebooks are
# checked statically by `translate check` in the tests: same code cells, current translations).
NBVAL_NOTEBOOKS := $(wildcard notebooks/[0-9][0-9]_*.ipynb notebooks/zh/00_*.ipynb)

.PHONY: env course test unit notebooks bench bench-claims student classroom classroom-check lab clean

env: $(ENV_STAMP)

# pip byte-compiles the environment's 16,000 modules one by one (about 45 of its 115 CPU seconds);
# compileall does the same on every core afterwards, and for the package itself. The bytecode must be there: where
# PYTHONDONTWRITEBYTECODE is set, every process (a kernel, a Flower process) would compile its imports
# again. A module that does not compile (a template, Python 2 code in a package) is skipped, as pip does.
$(ENV_STAMP): pyproject.toml
ifndef VIRTUAL_ENV
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
endif
	$(PY) -m pip install --disable-pip-version-check --no-compile -q -e '.[dev]'
	$(PY) -m compileall -q -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" fedlab_utils || true
	touch $@

course: $(ENV_STAMP)
	$(EDITION_ENV) $(PY) -m fedlab_utils run --out build --lang $(EDITION)

# The zh edition's outputs in Chinese: after `make course LANG=zh`, no run of four or more English
# words in the eight executed notebooks (tracebacks, warnings, printed source and the third-party
# texts of notebooks/locale/scan_allow.txt aside). CI runs it.
.PHONY: zh-scan
zh-scan: $(ENV_STAMP)
	$(PY) -m fedlab_utils translate scan-outputs --allow-file notebooks/locale/scan_allow.txt build/zh/notebooks/[0-9][0-9]_*.ipynb

# Tests run in TEST_JOBS processes (pytest-xdist), one torch thread each so the processes do not
# oversubscribe the cores; TEST_JOBS=1 runs them serially. --dist loadfile keeps a test file (its shared
# fixtures) or a notebook (its kernel) in one process; the files start in the order tests/conftest.py
# gives them, longest first, so that both workers finish together.
# make test leaves out what is marked `slow` (real Flower deployments, nbgrader's autograding) and the
# notebooks; `make slow-check` runs exactly those, and CI (.ci/run) runs both.
TEST_JOBS ?= 2
XDIST = -p no:cacheprovider -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder
test: $(ENV_STAMP) lint
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest tests -m "not slow" $(XDIST)

# The checks too slow for make test: every notebook under nbval (the English ones and the Chinese 00)
# and the tests marked `slow` (pyproject.toml's markers). CI runs it after make test.
.PHONY: slow-check
slow-check: $(ENV_STAMP) notebooks
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest tests -m slow $(XDIST)

# The design as a contract: ruff (lint), mypy (core, compression, ledger) and import-linter's layers,
# all configured in pyproject.toml.
.PHONY: lint
lint: $(ENV_STAMP)
	$(PY) -m ruff check fedlab_utils tests benchmarks
	$(PY) -m mypy
	$(PY) -c "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())" --no-cache

unit: $(ENV_STAMP)
	$(PY) -m pytest tests

notebooks: $(ENV_STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest $(NBVAL_NOTEBOOKS) --nbval-lax --nbval-current-env $(XDIST)

bench: $(ENV_STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[scale]'
	$(PY) benchmarks/run.py

# Only the claims benchmark: every notebook on seeds 0-19 -> benchmarks/results/claims.json
bench-claims: $(ENV_STAMP)
	$(PY) benchmarks/bench_claims.py

# Every notebook with -p rounds 2 -p num_clients 3: finishes or refuses naming rounds (slow; not in make test)
.PHONY: small-params
small-params: $(ENV_STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) benchmarks/small_params.py --out build/small-params

student: $(ENV_STAMP)
	$(EDITION_ENV) $(PY) -m fedlab_utils student --out $(EDITION_BUILD)/student --lang $(EDITION)

classroom: $(ENV_STAMP)
	$(EDITION_ENV) $(PY) -m fedlab_utils classroom --out $(EDITION_BUILD)/classroom --lang $(EDITION)

classroom-check: $(ENV_STAMP)
	$(EDITION_ENV) $(PY) -m fedlab_utils classroom --grade-check --out $(EDITION_BUILD)/classroom-check --lang $(EDITION)

lab: $(ENV_STAMP)
	$(EDITION_ENV) FEDLAB_PROGRESS=1 $(PY) -m jupyter lab $(EDITION_DIR)

clean:
	rm -rf build

# The course website (website/, Sphinx + myst-nb + sphinx-book-theme): both editions from the
# notebooks `make course` and `make course LANG=zh` executed (never run again) -> build/site/{en,zh}/.
# Launch buttons (JupyterHub, Colab) are set in website/site.toml. Needs the [site] extra.
SITE_STAMP := $(dir $(ENV_STAMP)).fedlab-site-installed
$(SITE_STAMP): pyproject.toml $(ENV_STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev,site]'
	touch $@

.PHONY: site site-check standalone-check
# SITE_FROM: where make course wrote the executed notebooks (build/notebooks/, build/zh/notebooks/)
SITE_FROM ?= build
site: $(SITE_STAMP)
	$(PY) website/build_site.py --build $(SITE_FROM) --out build/site

# Serve build/site on 127.0.0.1 and check it in Debian's Chromium (Playwright): links, console
# errors, failed requests, language switch, search, widget views; screenshots -> docs/img/.
# Installs Chromium (and a CJK font for the zh screenshots) with apt-get where missing (as root).
site-check: $(SITE_STAMP)
	@if [ ! -x /usr/bin/chromium ] || ! fc-list :lang=zh | grep -q .; then \
		apt-get update -q && apt-get install -y -q chromium fonts-wqy-microhei; fi
	$(PY) -m pytest tests/test_website.py -p no:cacheprovider -q
	$(PY) website/check_site.py --site build/site --screenshots docs/img

# Notebook 00 copied alone into an empty folder, run in a fresh venv that installs the course's
# wheel through the notebook's bootstrap cell (slow; not in make test)
standalone-check: $(ENV_STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) website/standalone_check.py

# The deployment of docs/deployment.md across four network namespaces (server, laptop, two
# devices): the docs' commands verbatim, a SAN mismatch, a loopback-bound server, a cut link.
# Needs root and iproute2 (.ci/run installs it); slow, so not in make test.
.PHONY: multihost-check
multihost-check: $(ENV_STAMP)
	FEDLAB_MULTIHOST=1 OMP_NUM_THREADS=1 $(PY) -m pytest tests/test_multihost.py -p no:cacheprovider -v

# The course's Flower apps on Flower's simulation runtime (Ray, the [scale] extra, installed here
# only): deploy --simulation against run(). Slow, so not in make test.
.PHONY: scale-check
scale-check: $(ENV_STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[scale]'
	FEDLAB_SCALE=1 OMP_NUM_THREADS=1 $(PY) -m pytest tests/test_flower_simulation.py -p no:cacheprovider -v

# Every notebook's claims on degenerate parameters (a target out of reach, a single round) and a
# 2-round FEMNIST sweep of notebook 00 on tiny LEAF files: claims are recorded, never raised.
# Runs whole notebooks (about half an hour on 2 cores), so not in make test.
# PYTEST_ARGS="-k 00" picks cases.
.PHONY: claims-degenerate
claims-degenerate: $(ENV_STAMP)
	FEDLAB_CLAIMS_DEGENERATE=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest tests/test_claims_degenerate.py \
		-p no:cacheprovider -v -rA $(PYTEST_ARGS)
