"""The paper's results table (NeurIPS 2020, ResNet-50, mAP / Rank-1 in %), read from ``paper_table.csv``.

The CSV ships with the package, one row per (project config, dataset): ``config`` is the stem of
``projects/<config>.yml``, ``dataset`` fastreid's registry name. The paper prints its BoT+EWTH row as
"HNEWTH" (a typo: BoT+HNEWTH has its own row); it is stored as ``BoT_EWTH``.
"""
import csv
import functools
import os
from typing import NamedTuple

__all__ = ["PaperResult", "PAPER_DATASETS", "PAPER_CONFIGS", "paper_table", "paper_result"]

_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_table.csv")

#: Datasets the paper reports, in its column order.
PAPER_DATASETS = ("Market1501", "DukeMTMC")


class PaperResult(NamedTuple):
    method: str  # as the paper names it, e.g. "AGW+HNEWTH"
    mAP: float
    rank1: float


@functools.lru_cache(maxsize=None)
def paper_table():
    """``{(config, dataset): PaperResult}`` in the paper's row order."""
    table = {}
    with open(_TABLE, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["config"], row["dataset"])
            if key in table:
                raise ValueError("{}: duplicate row for config {!r} on {!r}".format(_TABLE, *key))
            table[key] = PaperResult(row["method"], float(row["mAP"]), float(row["rank1"]))
    return table


def _configs():
    seen = []
    for config, _ in paper_table():
        if config not in seen:
            seen.append(config)
    return tuple(seen)


#: The 16 project configs of the paper's table, in its row order (BoT first, then AGW).
PAPER_CONFIGS = _configs()


def paper_result(config, dataset):
    """The paper's :class:`PaperResult` for ``config`` (a name or a path to ``<name>.yml``) on
    ``dataset``, or ``None`` where the paper has no number (e.g. SynthReID, or a config of one's own)."""
    name = os.path.splitext(os.path.basename(str(config)))[0]
    return paper_table().get((name, dataset))
