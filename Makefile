# Set-up is automatic: every target below first makes .venv (once) with a torch/torchvision pair that
# imports together, fastreid 1.4.0 without its stale torch==1.13.1 pins, and this package (editable).
# test-oldest does the same in .venv-oldest with the oldest supported versions (see below).
PYTHON ?= python3
# the editable installs write fastreid_ewth.egg-info into this folder: one at a time when both venvs are
# being made at once (util-linux flock where there is one)
EDITABLE_LOCK := $(shell command -v flock >/dev/null 2>&1 && echo "flock .editable-install.lock")
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fastreid_ewth-installed

.PHONY: install test demo clean install-oldest test-oldest

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch torchvision
	$(PY) -m pip install --quiet --no-deps fastreid==1.4.0
	$(EDITABLE_LOCK) $(PY) -m pip install --quiet -e '.[test,plots,onnx,slurm]'
	$(PY) -c "import torch, torchvision, fastreid_ewth; print('ready: torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

# two test files at a time (pytest-xdist, whole files per worker so module fixtures are built once): much of a
# test's time is spent waiting on the training processes it starts. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 tests

# The same suite on the oldest versions this package claims to support: the Python of setup.cfg's
# python_requires floor (pyenv's, any patch release) with the torch / torchvision / numpy pins of
# constraints-oldest.txt, in a venv of its own. Everything else resolves to what pip picks for them.
OLDEST_VENV        ?= .venv-oldest
OLDEST_PY          := $(OLDEST_VENV)/bin/python
OLDEST_STAMP       := $(OLDEST_VENV)/.fastreid_ewth-installed
OLDEST_CONSTRAINTS := constraints-oldest.txt
OLDEST_PYTHON_VERSION := $(shell sed -n 's/^python_requires *= *>= *\([0-9][0-9.]*\).*/\1/p' setup.cfg)
PYENV_ROOT         ?= /root/.pyenv
# newest patch release of that Python under pyenv, else pythonX.Y on PATH; override with PYTHON_OLDEST=...
PYTHON_OLDEST      ?= $(or $(shell ls -d $(PYENV_ROOT)/versions/$(OLDEST_PYTHON_VERSION).*/bin/python 2>/dev/null \
                          | grep -E '/versions/$(subst .,\.,$(OLDEST_PYTHON_VERSION))\.[0-9]+/' | sort -V | tail -n 1),$(shell \
                          command -v python$(OLDEST_PYTHON_VERSION) 2>/dev/null))

install-oldest: $(OLDEST_STAMP)

$(OLDEST_STAMP): setup.cfg pyproject.toml Makefile $(OLDEST_CONSTRAINTS)
	@test -n "$(OLDEST_PYTHON_VERSION)" || { echo "make test-oldest: no python_requires = >=X.Y in setup.cfg" >&2; exit 1; }
	@test -n "$(PYTHON_OLDEST)" && test -x "$(PYTHON_OLDEST)" || { \
	  echo "make test-oldest: Python $(OLDEST_PYTHON_VERSION) (setup.cfg's python_requires floor) not found:" \
	       "no $(PYENV_ROOT)/versions/$(OLDEST_PYTHON_VERSION).*/bin/python and no python$(OLDEST_PYTHON_VERSION) on PATH." \
	       "Install it (pyenv install $(OLDEST_PYTHON_VERSION)) or pass PYTHON_OLDEST=/path/to/python$(OLDEST_PYTHON_VERSION)." >&2; exit 1; }
	@"$(PYTHON_OLDEST)" -c 'import sys; want = tuple(map(int, "$(OLDEST_PYTHON_VERSION)".split("."))); \
	  sys.exit(0 if sys.version_info[:2] == want else "make test-oldest: $(PYTHON_OLDEST) is Python %d.%d, not $(OLDEST_PYTHON_VERSION)" % sys.version_info[:2])'
	test -x $(OLDEST_PY) || "$(PYTHON_OLDEST)" -m venv $(OLDEST_VENV)
	$(OLDEST_PY) -m pip install --quiet -c $(OLDEST_CONSTRAINTS) torch torchvision numpy
	$(OLDEST_PY) -m pip install --quiet --no-deps fastreid==1.4.0
	$(EDITABLE_LOCK) $(OLDEST_PY) -m pip install --quiet -c $(OLDEST_CONSTRAINTS) -e '.[test,plots,onnx,slurm]'
	$(OLDEST_PY) -c "import sys, torch, torchvision, numpy, fastreid_ewth; \
	  print('ready (oldest): Python', sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'numpy', numpy.__version__)"
	touch $(OLDEST_STAMP)

# Tests marked heavy (long subprocess trainings of version-independent logic: the runner, the lock, the
# tools' scripts) and tests/test_reproduce.py (the runner's bookkeeping, plain Python) run in `make test`
# only, keeping CI within its time.
test-oldest: $(OLDEST_STAMP)
	$(OLDEST_PY) -m pytest -q -m "not heavy" --ignore=tests/test_reproduce.py --durations=25 tests

demo: $(STAMP)
	@echo "== SynthReID, untrained model (chance-level baseline) =="
	$(PY) tools/train_net.py --config-file projects/Demo.yml --eval-only OUTPUT_DIR logs/demo-untrained
	@echo "== SynthReID, training projects/Demo.yml =="
	$(PY) tools/train_net.py --config-file projects/Demo.yml OUTPUT_DIR logs/demo

# TH vs HNEWTH on SynthReID, 3 seeds each, on CPU; report in logs/compare/REPORT.md. Rerunning skips finished runs.
.PHONY: compare
compare: $(STAMP)
	$(PY) tools/reproduce.py --preset synth

# Every loss of both tables on SynthReID, 3 seeds each, CPU; report in logs/zoo/REPORT.md. Rerun resumes.
.PHONY: zoo
zoo: $(STAMP)
	$(PY) tools/reproduce.py --preset zoo

clean:
	rm -rf $(VENV) $(OLDEST_VENV) logs .editable-install.lock
