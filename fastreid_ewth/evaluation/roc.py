"""Scores and labels for fastreid's ROC (``TEST.ROC``), without its Cython module or per-query loop.

fastreid's Python ``evaluate_roc_py`` (``fastreid.evaluation.roc``) collects, for every query (including
queries without a correct match), the distances of the gallery entries kept by the Market1501 protocol:
label 0 for entries of the query's identity (from another camera), label 1 for other identities.
``sklearn.metrics.roc_curve(labels, scores)`` then treats distance as the score of "different identity".
We produce exactly the same (score, label) pairs; only their order differs, which ``roc_curve`` ignores
(it sorts the scores and merges equal ones).
"""
import numpy as np

from .checks import as_distmat, as_labels
from .rank import GalleryRanker

__all__ = ["roc_scores"]


def roc_scores(distmat, q_pids, g_pids, q_camids, g_camids):
    """(scores, labels) for ``sklearn.metrics.roc_curve(labels, scores)``.

    Args:
        distmat: (Q, G) distances (numpy array or torch tensor). q_pids, q_camids: (Q,). g_pids, g_camids: (G,).

    Returns:
        scores: (N,) distances in distmat's dtype; labels: (N,) float64, 0 = same identity, 1 = different.
        N is Q×G minus the same-identity same-camera pairs.
    """
    distmat = as_distmat(distmat)
    num_q, num_g = distmat.shape
    q_pids = as_labels(q_pids, "q_pids", num_q, "distmat has {} query rows".format(num_q))
    q_camids = as_labels(q_camids, "q_camids", num_q, "distmat has {} query rows".format(num_q))
    g_pids = as_labels(g_pids, "g_pids", num_g, "distmat has {} gallery columns".format(num_g))
    g_camids = as_labels(g_camids, "g_camids", num_g, "distmat has {} gallery columns".format(num_g))

    rows, cols = GalleryRanker(g_pids, g_camids).same_identity_pairs(q_pids)
    other_cam = g_camids[cols] != q_camids[rows]
    positives = distmat[rows[other_cam], cols[other_cam]]
    different = np.ones(distmat.shape, dtype=bool)
    different[rows, cols] = False
    negatives = distmat[different]
    scores = np.concatenate([positives, negatives])
    labels = np.concatenate([np.zeros(positives.size), np.ones(negatives.size)])
    return scores, labels
