"""Exact, vectorised ReID evaluation for fastreid: no compile step, bounded memory.

* :func:`evaluate_rank` — CMC / AP / INP from a distance matrix, equal to fastreid's Python
  ``evaluate_rank`` (Market1501 protocol);
* :func:`evaluate_features` — the same metrics from features, distances computed block by block;
* :class:`ExactReidEvaluator` — drop-in for fastreid's ``ReidEvaluator`` (honours ``TEST.METRIC``, ``AQE``,
  ``RERANK``, ``ROC``; ``TEST.TIES`` orders exact correct/wrong ties).
"""
from .evaluator import ExactReidEvaluator
from .features import evaluate_features, rank_features
from .rank import UnsupportedProtocolError, evaluate_rank
from .roc import roc_scores

__all__ = ["evaluate_rank", "evaluate_features", "rank_features", "roc_scores", "ExactReidEvaluator",
           "UnsupportedProtocolError"]
