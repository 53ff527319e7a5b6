#!/usr/bin/env python
"""Reproduce the paper's table: train every (config, dataset) run, then compare with the paper.

    python tools/reproduce.py                                     # the 16 configs on Market1501 and DukeMTMC
    python tools/reproduce.py --configs projects/BoT_TH.yml projects/BoT_HNEWTH.yml --datasets DukeMTMC
    python tools/reproduce.py --dry-run                           # print the commands (e.g. for a cluster)
    python tools/reproduce.py --report-only                       # report on the runs that are there
    python tools/reproduce.py --preset synth                      # TH vs HNEWTH on SynthReID, 3 seeds, CPU

Each run trains with ``tools/train_net.py`` into ``<output>/<dataset>/<config>[-seedN]``. Rerunning the
same command skips finished runs and resumes interrupted ones. Results: ``<output>/REPORT.md``,
``report.csv``, ``runs.csv``, ``map_vs_paper.png`` and ``curves/``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastreid_ewth.reproduce.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(train_script=os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_net.py")))
