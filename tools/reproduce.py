#!/usr/bin/env python
"""Reproduce the paper's table, or the loss zoo's: train every (config, dataset) run, then compare with the
published numbers.

    python tools/reproduce.py                                     # the 16 configs on Market1501 and DukeMTMC
    python tools/reproduce.py --configs projects/BoT_TH.yml projects/BoT_HNEWTH.yml --datasets DukeMTMC
    python tools/reproduce.py --dry-run                           # print the commands (e.g. for a cluster)
    python tools/reproduce.py --report-only                       # report on the runs that are there
    python tools/reproduce.py --preset synth                      # TH vs HNEWTH on SynthReID, 3 seeds, CPU
    python tools/reproduce.py --preset zoo                        # the 22 zoo configs on SynthReID, 3 seeds
    python tools/reproduce.py --report-only --datasets Market1501 --configs projects/zoo/*.yml  # published
    python tools/reproduce.py --launcher slurm --partition gpu --time 24:00:00 --gpus-per-job 1  # SLURM jobs
    python tools/reproduce.py --jobs 2 --gpus-per-job 2           # two runs at once, two GPUs of their own each

Run it from the root of the checkout: the paper's configs and the presets' are read from ``projects/`` in
the current folder (``--projects DIR`` otherwise). Each run trains with ``python -m fastreid_ewth.train``
(what ``tools/train_net.py`` runs) into ``<output>/<dataset>/<config>[-seedN]``. Rerunning the same command
skips finished runs and resumes interrupted ones (with ``--launcher slurm``: prints each run's job state and
resubmits failed runs, never one whose job is queued or running). Results: ``<output>/REPORT.md``,
``report.csv``, ``runs.csv``, ``map_vs_paper.png`` and ``curves/``. Installed, the same is
``python -m fastreid_ewth.reproduce``.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# the trainings are processes of their own (python -m fastreid_ewth.train): have them import this checkout's
# package too, installed or not
os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])

from fastreid_ewth.reproduce.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
