"""Reproduce the paper's table (or the loss zoo's) with ``tools/reproduce.py`` (or ``python -m
fastreid_ewth.reproduce``): run configs × datasets, each through ``python -m fastreid_ewth.train``
(resumable), then report measured vs published numbers with plots.

Modules: ``paper`` (the published numbers of the EWTH paper and the zoo's two codebases,
``paper_table.csv``), ``runner`` (run folders, markers, launching), ``metrics`` (reading ``metrics.json`` /
``log.txt``), ``report`` (REPORT.md and CSVs), ``plots`` (PNGs), ``presets`` (``--preset synth``, ``zoo``),
``cli`` (the command line).
"""
from .paper import PAPER_CONFIGS, PAPER_DATASETS, paper_result, paper_table
from .runner import RunSpec, run_state

__all__ = ["PAPER_CONFIGS", "PAPER_DATASETS", "RunSpec", "paper_result", "paper_table", "run_state"]
