# Set-up is automatic: every target below first makes .venv (once) with a torch/torchvision pair that
# imports together, fastreid 1.4.0 without its stale torch==1.13.1 pins, and this package (editable).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fastreid_ewth-installed

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch torchvision
	$(PY) -m pip install --quiet --no-deps fastreid==1.4.0
	$(PY) -m pip install --quiet -e '.[test,plots]'
	$(PY) -c "import torch, torchvision, fastreid_ewth; print('ready: torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	@echo "== SynthReID, untrained model (chance-level baseline) =="
	$(PY) tools/train_net.py --config-file projects/Demo.yml --eval-only OUTPUT_DIR logs/demo-untrained
	@echo "== SynthReID, training projects/Demo.yml =="
	$(PY) tools/train_net.py --config-file projects/Demo.yml OUTPUT_DIR logs/demo

# TH vs HNEWTH on SynthReID, 3 seeds each, on CPU; report in logs/compare/REPORT.md. Rerunning skips finished runs.
.PHONY: compare
compare: $(STAMP)
	$(PY) tools/reproduce.py --preset synth

clean:
	rm -rf $(VENV) logs
