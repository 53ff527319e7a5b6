"""Published results (ResNet-50, mAP / Rank-1 in %) of three sources, read from ``paper_table.csv``.

- ``EWTH paper (NeurIPS 2020)``: the paper this package implements, its 16 BoT / AGW configs
  ``projects/{BoT,AGW}_*.yml`` on Market1501 and DukeMTMC (:data:`PAPER_CONFIGS`, :data:`PAPER_DATASETS`).
- ``torchreid loss comparison``: a torchreid-based comparison of twelve deep metric losses without
  tricks, on Market1501 and DukeMTMC: the plain rows of the loss zoo, ``projects/zoo/Plain_*.yml``.
- ``BoT-style simple codebase``: a BoT-style codebase pairing a classification loss with a pairwise
  loss, on Market1501 and MSMT17: the BoT rows of the loss zoo, ``projects/zoo/BoT_*.yml``.

The CSV ships with the package, one row per (project config, dataset): ``source`` is one of the above,
``config`` the stem of the project config (``projects/<config>.yml``, ``projects/zoo/<config>.yml``),
``method`` the row's name in its source, ``dataset`` fastreid's registry name. A stem names one config
across all sources. The EWTH paper prints its BoT+EWTH row as "HNEWTH" (a typo: BoT+HNEWTH has its own
row); it is stored as ``BoT_EWTH``.
"""
import csv
import functools
import os
from typing import NamedTuple

__all__ = ["PaperResult", "PAPER_SOURCE", "SOURCES", "PAPER_DATASETS", "PAPER_CONFIGS", "paper_table",
           "paper_result", "config_source", "source_datasets"]

_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_table.csv")

#: The source of the EWTH paper's rows.
PAPER_SOURCE = "EWTH paper (NeurIPS 2020)"

#: Every source of ``paper_table.csv`` -> what its numbers were measured with (for the report's notes).
SOURCES = {
    PAPER_SOURCE: "ResNet-50, the BoT and AGW recipes with each triplet variant",
    "torchreid loss comparison": "torchreid, ResNet-50, no tricks, one deep metric loss per row",
    "BoT-style simple codebase": "ResNet-50, BoT tricks, a classification loss + a pairwise loss per row",
}

#: Datasets the EWTH paper reports, in its column order.
PAPER_DATASETS = ("Market1501", "DukeMTMC")


class PaperResult(NamedTuple):
    method: str  # as its source names it, e.g. "AGW+HNEWTH", "Softmax+Triplet loss"
    mAP: float
    rank1: float
    source: str  # one of SOURCES, e.g. "torchreid loss comparison"


@functools.lru_cache(maxsize=None)
def paper_table():
    """``{(config, dataset): PaperResult}`` of every source, in the CSV's row order (the EWTH paper first)."""
    table = {}
    with open(_TABLE, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["config"], row["dataset"])
            if key in table:
                raise ValueError("{}: duplicate row for config {!r} on {!r}".format(_TABLE, *key))
            if row["source"] not in SOURCES:
                raise ValueError("{}: row of config {!r} on {!r} has unknown source {!r} (known: {})".format(
                    _TABLE, key[0], key[1], row["source"], ", ".join(SOURCES)))
            table[key] = PaperResult(row["method"], float(row["mAP"]), float(row["rank1"]), row["source"])
    return table


def _configs(source):
    seen = []
    for (config, _), result in paper_table().items():
        if result.source == source and config not in seen:
            seen.append(config)
    return tuple(seen)


#: The 16 project configs of the EWTH paper's table, in its row order (BoT first, then AGW).
PAPER_CONFIGS = _configs(PAPER_SOURCE)


def source_datasets(source):
    """The datasets ``source`` has numbers on, in the CSV's order -> tuple of names."""
    return tuple(dict.fromkeys(dataset for (_, dataset), r in paper_table().items() if r.source == source))


def _stem(config):
    return os.path.splitext(os.path.basename(str(config)))[0]


def config_source(config):
    """The source with published numbers for ``config`` (a name or a path) on any dataset, or ``None``."""
    name = _stem(config)
    for (other, _), result in paper_table().items():
        if other == name:
            return result.source
    return None


def paper_result(config, dataset):
    """The published :class:`PaperResult` for ``config`` (a name or a path to ``<name>.yml``, of any source)
    on ``dataset``, or ``None`` where no source has a number (e.g. SynthReID, or a config of one's own)."""
    return paper_table().get((_stem(config), dataset))
