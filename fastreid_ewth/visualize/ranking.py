"""One pass over the query×gallery distances of a model: per-query AP, the top-k lists and the pair distances.

Distances are :mod:`fastreid_ewth.evaluation.distance`'s (what the evaluator ranks by), computed one block of
query rows at a time, so memory stays at one block even for MSMT17-sized sets. Per block:

* AP, whether the query has a correct match, and the position of its first one come from the evaluator's
  :meth:`~fastreid_ewth.evaluation.rank.GalleryRanker.rank_block` (Market1501 protocol: gallery images of
  the query's identity *and* camera, "junk", are left out of its ranking);
* the top-k gallery images of each query with the junk left out (ties in distance: lower gallery index
  first): these take ranks 1..k, as in the evaluator's ranking; and the junk images at most as far as the
  last of them (all of the query's junk when it has fewer than k other gallery images), which a rank list
  may draw between them (:meth:`Ranking.row`) or only count (``junk_count``);
* every positive pair's distance (same identity, other camera) and a uniform sample of the negative pairs'
  (other identity), drawn with a fixed seed: the same pairs for two models of the same images.
"""
from dataclasses import dataclass

import numpy as np
import torch

from ..evaluation.distance import check_metric, iter_distance_blocks
from ..evaluation.rank import GalleryRanker

__all__ = ["Ranking", "rank_model", "select_queries", "SORTS"]

#: distances per block: 4M float32 (16 MB), plus a few masks of the same shape
ENTRIES_PER_BLOCK = 1 << 22

#: query orders of ``select_queries``; "diff" needs a second model
SORTS = ("worst", "best", "diff")


@dataclass
class Ranking:
    """What :func:`rank_model` computes for one model (Q queries, G gallery images, k shown per query).

    Attributes:
        ap: (Q,) float64 AP of each query, 0 where ``valid`` is False.
        valid: (Q,) bool, the query has a correct match (same identity, other camera) in the gallery; the
            evaluator counts only these queries.
        first_hit: (Q,) int64 1-based rank of the first correct match, 0 where not valid.
        top_index: (Q, k) int64 gallery indices of the k closest kept images, closest first; -1 where the
            query's kept gallery has fewer than k images.
        top_dist: (Q, k) float64 their distances (NaN where ``top_index`` is -1).
        junk_index: (Q, J) int64 gallery indices of each query's junk images at most as far as the last image
            of its top-k (every junk image of the query when its top-k is not full), closest first (ties:
            lower gallery index first); -1 pads rows with fewer than J (J: the most of any query, may be 0).
        junk_dist: (Q, J) float64 their distances (NaN where ``junk_index`` is -1).
        junk_count: (Q,) int64 number of those junk images (valid entries of ``junk_index``).
        pos_dist: distances of every positive pair; neg_dist: of the sampled negative pairs.
        num_neg: number of negative pairs in all (``neg_dist`` holds all of them or a sample).
    """
    ap: np.ndarray
    valid: np.ndarray
    first_hit: np.ndarray
    top_index: np.ndarray
    top_dist: np.ndarray
    junk_index: np.ndarray
    junk_dist: np.ndarray
    junk_count: np.ndarray
    pos_dist: np.ndarray
    neg_dist: np.ndarray
    num_neg: int

    @property
    def mAP(self):
        return float(self.ap[self.valid].mean()) if self.valid.any() else float("nan")

    @property
    def rank1(self):
        return float((self.first_hit[self.valid] == 1).mean()) if self.valid.any() else float("nan")

    def row(self, q, junk=True):
        """The gallery tiles of query ``q``'s rank list: ``[(gallery index, distance, rank)]``.

        The top-k images keep ranks 1..k (as the evaluator ranks the gallery without the query's junk). With
        ``junk`` True the junk images of ``junk_index`` are added with rank None, and the list is ordered by
        (distance, gallery index): a junk image stands where its distance puts it, and the ranked images
        keep their order (their ties are already by gallery index). With ``junk`` False: the top-k alone.
        """
        tiles = [(int(g), float(d), rank) for rank, (g, d) in
                 enumerate(zip(self.top_index[q], self.top_dist[q]), start=1) if g >= 0]
        if junk:
            tiles += [(int(g), float(d), None) for g, d in zip(self.junk_index[q], self.junk_dist[q]) if g >= 0]
            tiles.sort(key=lambda t: (t[1], t[0]))
        return tiles


def _same_identity_count(q_pids, g_pids):
    """(Q,) number of gallery images sharing each query's identity."""
    sorted_pids = np.sort(g_pids)
    return np.searchsorted(sorted_pids, q_pids, side="right") - np.searchsorted(sorted_pids, q_pids, side="left")


def _top_k(dist, kept, k):
    """Per row of ``dist`` (B, G): the k closest entries where ``kept`` is True, ties by index."""
    num_rows, num_g = dist.shape
    index = np.full((num_rows, k), -1, dtype=np.int64)
    values = np.full((num_rows, k), np.nan, dtype=np.float64)
    masked = np.where(kept, dist, np.inf)
    kk = min(k, num_g)
    # the k-th smallest kept value: every entry up to it (ties included) is a candidate
    kth = np.partition(masked, kk - 1, axis=1)[:, kk - 1]
    for r in range(num_rows):
        candidates = np.flatnonzero(kept[r] & (masked[r] <= kth[r]))
        order = candidates[np.argsort(dist[r, candidates], kind="stable")][:k]
        index[r, :order.size] = order
        values[r, :order.size] = dist[r, order]
    return index, values


def rank_model(query, gallery, metric, k, max_negatives, seed=0):
    """Rank ``query`` against ``gallery`` (two labelled :class:`~fastreid_ewth.inference.Embeddings`).

    Args:
        metric: "cosine" or "euclidean" (squared), as the evaluator means them.
        k: gallery images to keep per query (>= 1).
        max_negatives: keep at most this many negative pairs (a uniform sample drawn with ``seed``).

    Returns:
        a :class:`Ranking`.
    """
    check_metric(metric)
    q_pids, q_camids = query.pids, query.camids
    g_pids, g_camids = gallery.pids, gallery.camids
    num_q, num_g = len(query), len(gallery)

    num_neg_per_query = num_g - _same_identity_count(q_pids, g_pids)
    num_neg = int(num_neg_per_query.sum())
    if num_neg > max_negatives:
        # indices into the negative pairs in row-major order; same labels and seed -> same pairs
        samples = np.sort(np.random.default_rng(seed).choice(num_neg, size=max_negatives, replace=False))
    else:
        samples = None

    ranker = GalleryRanker(g_pids, g_camids)
    parts = {"ap": [], "valid": [], "first_hit": [], "top_index": [], "top_dist": [], "pos_dist": [],
             "neg_dist": []}
    junk_rows = []  # per query: (gallery indices, distances) of the junk within its shown range
    neg_offset = 0
    rows = max(1, ENTRIES_PER_BLOCK // max(1, num_g))
    q_feats, g_feats = torch.from_numpy(query.feats), torch.from_numpy(gallery.feats)
    for start, stop, dist in iter_distance_blocks(q_feats, g_feats, metric, rows):
        dist = dist.numpy().copy()
        bp, bc = q_pids[start:stop], q_camids[start:stop]
        stats = ranker.rank_block(dist, bp, bc)
        for key in ("ap", "valid", "first_hit"):
            parts[key].append(np.asarray(stats[key]))

        same = bp[:, None] == g_pids[None, :]
        junk = same & (bc[:, None] == g_camids[None, :])
        index, values = _top_k(dist, ~junk, k)
        parts["top_index"].append(index)
        parts["top_dist"].append(values)
        # junk at most as far as the last ranked tile (all of the query's junk when fewer than k are ranked)
        last = np.where(index[:, -1] >= 0, values[:, -1], np.inf)
        in_range = junk & (dist <= last[:, None])
        for r in range(in_range.shape[0]):
            found = np.flatnonzero(in_range[r])  # increasing index: the stable sort breaks ties by index
            found = found[np.argsort(dist[r, found], kind="stable")]
            junk_rows.append((found.astype(np.int64), dist[r, found].astype(np.float64)))

        parts["pos_dist"].append(dist[same & ~junk].astype(np.float64))
        negatives = np.flatnonzero(~same)  # row-major within the block, as the samples count them
        if samples is None:
            parts["neg_dist"].append(dist.ravel()[negatives].astype(np.float64))
        else:
            lo, hi = np.searchsorted(samples, [neg_offset, neg_offset + negatives.size])
            parts["neg_dist"].append(dist.ravel()[negatives[samples[lo:hi] - neg_offset]].astype(np.float64))
        neg_offset += negatives.size

    out = {key: np.concatenate(value) for key, value in parts.items()}
    junk_count = np.array([found.size for found, _ in junk_rows], dtype=np.int64)
    width = int(junk_count.max()) if junk_count.size else 0
    junk_index = np.full((num_q, width), -1, dtype=np.int64)
    junk_dist = np.full((num_q, width), np.nan, dtype=np.float64)
    for i, (found, values) in enumerate(junk_rows):
        junk_index[i, :found.size] = found
        junk_dist[i, :found.size] = values
    return Ranking(ap=out["ap"].astype(np.float64), valid=out["valid"].astype(bool),
                   first_hit=out["first_hit"].astype(np.int64), top_index=out["top_index"],
                   top_dist=out["top_dist"], junk_index=junk_index, junk_dist=junk_dist, junk_count=junk_count,
                   pos_dist=out["pos_dist"], neg_dist=out["neg_dist"], num_neg=num_neg)


def select_queries(rankings, sort="worst", num=8, indices=None):
    """The query indices to show, in order.

    Args:
        rankings: one :class:`Ranking` per model (the first decides "worst" / "best").
        sort: "worst" (lowest AP first), "best" (highest first) or "diff" (largest AP difference between
            the first two models first); ties in the order of the query file. Only queries with a correct
            match (the ones the evaluator counts) take part.
        num: how many (fewer if fewer queries have a match).
        indices: explicit query indices: shown in this order, ``sort`` and ``num`` ignored.
    """
    if indices is not None:
        return [int(i) for i in indices]
    first = rankings[0]
    candidates = np.flatnonzero(first.valid)
    if sort == "worst":
        key = first.ap[candidates]
    elif sort == "best":
        key = -first.ap[candidates]
    elif sort == "diff":
        key = -np.abs(first.ap[candidates] - rankings[1].ap[candidates])
    else:
        raise ValueError("sort must be one of {}, got {!r}".format(", ".join(SORTS), sort))
    order = candidates[np.lexsort((candidates, key))]
    return [int(i) for i in order[:num]]
