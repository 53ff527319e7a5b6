"""Rank metrics straight from features, one block of queries at a time.

Per block: one matrix product into a reused buffer (:meth:`~.distance.DistanceBlocks.products`), then the
exact ranking of :class:`~.rank.GalleryRanker`, which for cosine turns the similarities into fastreid's
distances ``1 - s`` row by row as it copies each row out (no separate pass over the block). The product
is most of the time; what the ranking adds depends on ties (see :mod:`.rank`).

Peak memory is the gallery (plus its normalised copy for cosine) and one block of distances, instead of
fastreid's whole query×gallery matrix (3.8 GB in float32 for MSMT17) and its argsort (another 7.7 GB).
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .checks import as_features, as_labels, check_block_size, check_max_rank, check_no_nan_rows
from .distance import DistanceBlocks, block_bounds, check_metric
from .rank import GalleryRanker, RankAccumulator, block_rows, check_ties

__all__ = ["evaluate_features", "rank_features", "summarize"]

#: rank each block in a background thread while the next block's matrix product runs (with one thread
#: fewer for the per-row work than torch has; two product buffers). The product is bound by the vector
#: units, the ranking (mostly fastreid's argsort of tied rows) by memory latency, so where torch's threads
#: share physical cores (SMT siblings, as virtual CPUs often are) the two run side by side; on separate
#: cores the threads share the cores' time, which should cost about what running one after the other
#: does. Measured on a 2-vCPU VM whose 2-thread product is no faster than its 1-thread one (MSMT17 size,
#: random features): one after the other, ranking added about 65 % to the product's time; overlapped,
#: about nothing.
#: False: product, then ranking (on all of torch's threads), block after block.
OVERLAP = True


def summarize(cmc, all_AP, all_INP):
    """The dict returned by :func:`evaluate_features`, from :func:`~.rank.evaluate_rank`'s output (fractions)."""
    result = {"mAP": float(np.mean(all_AP)), "mINP": float(np.mean(all_INP)), "cmc": cmc}
    for r in (1, 5, 10):
        # a curve shorter than r (tiny gallery) has reached its final value by then
        result["Rank-{}".format(r)] = float(cmc[min(r, cmc.size) - 1])
    return result


def evaluate_features(query_feats, gallery_feats, q_pids, g_pids, q_camids, g_camids, metric="cosine",
                      max_rank=50, *, block_size=None, ties="fastreid"):
    """mAP, mINP and CMC of query features against gallery features (Market1501 protocol).

    Args:
        query_feats: (Q, D) and gallery_feats: (G, D) numpy arrays or torch tensors (not modified).
        q_pids, q_camids: (Q,) and g_pids, g_camids: (G,) identities and cameras.
        metric: "cosine" or "euclidean", as fastreid's ``build_dist`` (and ``TEST.METRIC``) defines them.
        max_rank: length of the CMC curve (cut to the gallery size when larger).
        block_size: query rows per distance block (default: about 32M distances per block; at least 16).
        ties: ``"fastreid"`` or ``"pessimistic"``, the order of a correct and a wrong match at exactly the
            same distance (:mod:`.rank`).

    Returns:
        dict with fractions in [0, 1] (not percent): ``mAP``, ``mINP``, ``Rank-1``, ``Rank-5``, ``Rank-10``
        (floats) and ``cmc`` ((L,) float32 array). Equal to :func:`~.rank.evaluate_rank` on the full
        distance matrix.

    Raises:
        ValueError: NaN/inf features (how many rows), mismatched shapes, unknown metric, or no query with a
        correct match.
    """
    return summarize(*rank_features(query_feats, gallery_feats, q_pids, g_pids, q_camids, g_camids, metric,
                                    max_rank, block_size=block_size, ties=ties))


def rank_features(query_feats, gallery_feats, q_pids, g_pids, q_camids, g_camids, metric="cosine", max_rank=50,
                  *, block_size=None, ties="fastreid"):
    """Like :func:`evaluate_features` but returns :func:`~.rank.evaluate_rank`'s ``(cmc, all_AP, all_INP)``."""
    check_metric(metric)
    check_ties(ties)
    query = as_features(query_feats, "query_feats")
    gallery = as_features(gallery_feats, "gallery_feats")
    if query.shape[1] != gallery.shape[1]:
        raise ValueError("query_feats has shape {} and gallery_feats {}: feature dimensions differ; pass "
                         "features from the same model".format(tuple(query.shape), tuple(gallery.shape)))
    if query.dtype != gallery.dtype:
        query, gallery = query.double(), gallery.double()
    num_q, num_g = query.shape[0], gallery.shape[0]
    q_pids = as_labels(q_pids, "q_pids", num_q, "query_feats has {} rows (shape {})".format(num_q, tuple(query.shape)))
    q_camids = as_labels(q_camids, "q_camids", num_q, "query_feats has {} rows (shape {})".format(
        num_q, tuple(query.shape)))
    g_pids = as_labels(g_pids, "g_pids", num_g, "gallery_feats has {} rows (shape {})".format(
        num_g, tuple(gallery.shape)))
    g_camids = as_labels(g_camids, "g_camids", num_g, "gallery_feats has {} rows (shape {})".format(
        num_g, tuple(gallery.shape)))
    max_rank = check_max_rank(max_rank)
    step = block_rows(num_g, check_block_size(block_size))
    if num_q == 0 or num_g == 0:
        raise ValueError("no query has a valid match: query_feats has shape {} and gallery_feats {} (empty "
                         "set)".format(tuple(query.shape), tuple(gallery.shape)))

    acc = RankAccumulator(num_g, max_rank)
    threads = torch.get_num_threads()
    if not OVERLAP or threads < 2:
        ranker = GalleryRanker(g_pids, g_camids, ties=ties)
        blocks = DistanceBlocks(gallery, metric)
        for first, start, stop in block_bounds(num_q, step):
            products = _products(blocks, query, first, start, stop)
            acc.add(ranker.rank_block(products, q_pids[start:stop], q_camids[start:stop], offset=blocks.offset))
        return acc.result()

    # rank block k in the background while the matrix product of block k + 1 runs
    ranker = GalleryRanker(g_pids, g_camids, num_threads=threads - 1, ties=ties)
    blocks = DistanceBlocks(gallery, metric, num_buffers=2)
    pending = None
    with ThreadPoolExecutor(max_workers=1) as background:
        for first, start, stop in block_bounds(num_q, step):
            products = _products(blocks, query, first, start, stop)
            if pending is not None:
                acc.add(pending.result())  # its buffer is the one the next product writes
            pending = background.submit(ranker.rank_block, products, q_pids[start:stop], q_camids[start:stop],
                                        offset=blocks.offset)
        acc.add(pending.result())
    return acc.result()


def _products(blocks, query, first, start, stop):
    """Block ``start:stop``'s products as numpy (the cosine ranker turns them into ``1 - s`` row by row)."""
    products = blocks.products(query[first:stop])[start - first:].numpy()
    if blocks.may_overflow:
        check_no_nan_rows(products, start, "the distance matrix (features too large for float?)")
    return products
