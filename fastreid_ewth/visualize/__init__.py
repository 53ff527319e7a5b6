"""Pictures of embedding files (``tools/visualize.py``): rank lists, two models side by side, t-SNE, distance
histograms, ROC and TensorBoard's embedding projector, linked from one ``index.html``.

* :mod:`.ranking` — per-query AP (the evaluator's), top-k lists and pair distances in one blocked pass;
* :mod:`.grid` — the rank-list grids (exact pixel layout, documented there);
* :mod:`.plots` — t-SNE, histograms, ROC (matplotlib figures without pyplot);
* :mod:`.projector` — TensorBoard projector files;
* :mod:`.cli` — the command line: check everything, draw in memory, then write (atomically).

See ``docs/visualize.md``.
"""
from .cli import PICTURES, VisualizeError, build_parser, main, prepare, render, write
from .grid import CORRECT, JUNK, QUERY, WRONG, Grid
from .images import ImageError, ImageStore
from .ranking import Ranking, rank_model, select_queries

__all__ = ["main", "build_parser", "prepare", "render", "write", "VisualizeError", "ImageError", "PICTURES",
           "Grid", "CORRECT", "WRONG", "JUNK", "QUERY", "ImageStore", "Ranking", "rank_model", "select_queries"]
