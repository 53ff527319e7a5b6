"""Offline evaluation of embedding files: ``--eval-only``'s numbers without the model.

The query and gallery features go through the very evaluator ``--eval-only`` uses,
:class:`~fastreid_ewth.evaluation.ExactReidEvaluator`, in the same order (queries first) and with the same
``TEST.*`` options (metric, AQE, re-ranking, ROC), so the numbers are the same to the last bit.
"""
from collections import OrderedDict

import torch
from fastreid.evaluation.testing import print_csv_format

from ..evaluation import ExactReidEvaluator

__all__ = ["evaluate_embeddings", "print_results"]


def evaluate_embeddings(cfg, query, gallery):
    """Rank-1/5/10, mAP, mINP and metric (percent; TPR@FPR with ``TEST.ROC``) of ``query`` against ``gallery``.

    Args:
        cfg: a fastreid config; only ``cfg.TEST`` is read.
        query, gallery: :class:`~fastreid_ewth.inference.Embeddings` with identities and cameras.
    """
    for name, part in (("query", query), ("gallery", gallery)):
        if not len(part):
            raise ValueError("the {} embeddings ({}) are empty: evaluation needs query and gallery images".format(
                name, part.source or name))
        if not part.labelled:
            raise ValueError("the {} embeddings ({}) have images without identity or camera (pid or camid -1): "
                             "evaluation needs both; embed a test set (tools/embed.py without --images) or a "
                             "folder of Market1501-named images".format(name, part.source or name))
    if query.feats.shape[1] != gallery.feats.shape[1]:
        raise ValueError("query features are {}-d ({}) but gallery features {}-d ({}): embed both with the same "
                         "model".format(query.feats.shape[1], query.source, gallery.feats.shape[1], gallery.source))
    evaluator = ExactReidEvaluator(cfg, num_query=len(query))
    for part in (query, gallery):
        evaluator.process({"targets": torch.from_numpy(part.pids), "camids": torch.from_numpy(part.camids)},
                          torch.from_numpy(part.feats))
    return evaluator.evaluate()


def print_results(results, name):
    """fastreid's results table (what ``--eval-only`` prints), for the test set called ``name``."""
    table = OrderedDict(results)
    table["dataset"] = name
    print_csv_format(table)
