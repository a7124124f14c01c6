# Two entry points (see README): `make book` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
# Python writes the bytecode of the modules it imports (its default), even where the environment says not to: the
# packages are installed with --no-compile (see below), so without it every process (each chapter's kernel, each
# test worker and torchrun rank) would compile torch, scipy, pandas ... from source again. The imports of a chapter
# took 12 s of CPU per process that way and 5 s with the bytecode written by the first (2026-11-28, 2-core machine).
unexport PYTHONDONTWRITEBYTECODE
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NBDIR  := .nbtest
# pytest-xdist workers for the unit tests and the notebooks (the machines have 2 cores); the unit tests use
# work stealing, so that a worker left with the last long tests hands some to the idle one.
JOBS ?= 2
# Seconds of recorded compute (from an empty cache: store.recheck_seconds) that make notebooks spends
# recomputing a random sample of the results store: 150 since the store was regenerated from nothing (2026-11-28), about
# two entries per chapter; it was 60 while entries over 60 s recorded had not all been rechecked.
STORE_CHECK_SECONDS ?= 150

.PHONY: setup test lint unit notebooks results paper-smoke paper-smoke-all book chapter site-test install-check clean

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml dance_book/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# --no-compile: Python compiles the modules it imports when it first imports them; compiling every
	# module of every package at install time (torch's thousands) costs CI minutes of CPU for nothing.
	$(PY) -m pip install --quiet --no-compile -r requirements.txt
	$(PY) -m pip install --quiet --no-compile --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e .
	# The book's code is its own distribution (dance-companion), never part of the library's wheel.
	$(PY) -m pip install --quiet --no-deps -e ./dance_book
	touch $(STAMP)

setup: $(STAMP)

## make test: the linter, unit tests and docstring examples, every chapter of the book executed (a cell
## that raises fails), then the paper-scale smoke run
test: lint unit notebooks paper-smoke

lint: setup
	$(PY) -m ruff check dance dance_book tests benchmarks tools _ext

unit: setup
	$(PY) -m pytest tests dance dance_book -q -n $(JOBS) --dist worksteal --ignore=tests/site

notebooks: setup
	# Every chapter (those of the toc, then any notebook missing from it), executed on $(JOBS)
	# processes into the jupyter-cache that the book's build reads, the longest first; a cell that
	# raises fails the stage. `make book` afterwards reuses these executions (they are the book's).
	$(PY) tools/execute_book.py --jobs $(JOBS) --check-store $(STORE_CHECK_SECONDS)

## make results: every heavy result of the book computed into the results store results/<scale>/ (committed;
## the chapters read it). Starts from nothing; a killed run resumes where it stopped. DANCE_SCALE=paper for paper scale.
## make results RANKS=N: the same over N torchrun processes, each executing its share of the chapters (one
## chapter at a time); rank 0 swaps the store in once every rank succeeded (tools/execute_book.py).
RANKS ?= 1
results: setup
ifeq ($(RANKS),1)
	$(PY) tools/execute_book.py --results --jobs $(JOBS)
else
	$(VENV)/bin/torchrun --standalone --nproc-per-node $(RANKS) tools/execute_book.py --results --jobs 1
endif

## make paper-smoke: every chapter that reads the scale at paper scale in miniature (DANCE_PAPER_SMOKE=1:
## random-init torchvision models, one or two 64x64 images per experiment, a 2x2 patch grid, one SmoothGrad sample /
## IG step, two Adam steps, one attack step, every sweep at its ends) on a generated fake ImageNet folder
## without boxes, and those that read object masks again with boxes; all chapters in $(JOBS) interpreters
## (tools/paper_smoke.py), the claims page last (it reads the others' results); a cell that raises fails.
## It skips the chapters that run the same code at both scales (SCALE_FREE and CI_SIZED in tools/paper_smoke.py,
## which make notebooks executes); make paper-smoke-all runs those too. Every other chapter runs (18 runs of 14
## chapters, 168 s wall and 316 CPU s on the quiet 2-core machine, 2026-11-28).
paper-smoke: setup
	rm -rf $(NBDIR)/paper
	$(PY) tools/paper_smoke.py --data $(NBDIR)/paper --jobs $(JOBS)

paper-smoke-all: setup
	rm -rf $(NBDIR)/paper
	$(PY) tools/paper_smoke.py --data $(NBDIR)/paper --jobs $(JOBS) --all

## make book: execute the notebooks and build the HTML site into _build/html
# The chapters run first on $(JOBS) processes into the jupyter-cache, the longest first, except those
# that make test (or an earlier make book) already executed on the same code; the build then takes
# their outputs from there (execute_notebooks: cache). Heavy results come from _build/.dance-cache.
book: setup
	$(PY) tools/execute_book.py --jobs $(JOBS) --reuse
	$(VENV)/bin/jupyter-book build --all .
	test -f _build/html/index.html

## make install-check: the library alone (no extras) in a fresh virtual environment runs the README example
install-check:
	bash .ci/install-check

## make chapter CHAPTER=claims: run one chapter alone into _build/chapters/claims.ipynb
chapter: setup
	@test -n "$(CHAPTER)" || { echo "usage: make chapter CHAPTER=<name of a file in book/, e.g. claims>"; exit 2; }
	$(PY) tools/execute_book.py --chapter $(CHAPTER)

## make site-test: every page of _build/html in headless Chromium, offline (after make book)
# Installs Debian's chromium when no Chromium is on the PATH. Screenshots: _build/site-test/screenshots
# (SITE_TEST_ARGS=--no-screenshots skips them: the checks are the same, the run about 2.5 times faster).
SITE_TEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
site-test: setup
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || \
	  { echo "installing chromium (apt-get)"; $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }
	$(PY) tools/site_test.py _build/html --jobs $(JOBS) $(SITE_TEST_ARGS)
	# The checks fail when they should: each kind of breakage, once, on a copy of the built site.
	$(PY) -m pytest -q -p no:cacheprovider --confcutdir=tests/site tests/site

clean:
	rm -rf _build $(NBDIR)
