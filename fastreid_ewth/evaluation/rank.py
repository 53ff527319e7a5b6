"""CMC / mAP / mINP under the Market1501 protocol, without sorting whole gallery rows.

Same meaning and values as fastreid's Python ``eval_market1501`` (``fastreid.evaluation.rank``):

* for each query, gallery entries with the query's identity *and* camera are removed from its ranking;
* a query whose remaining gallery holds no entry of its identity is skipped (not counted anywhere);
* ``cmc[r]`` is the fraction of counted queries whose first correct match is at rank ``<= r + 1``;
* AP is ``mean_k k / pos_k`` over the query's correct matches at 1-based positions ``pos_1 < pos_2 < ...``
  of the kept ranking, INP is ``K / pos_K``.

How it is fast: those numbers depend only on where the correct matches (a few per query) sit in the
ranking, i.e. on how many kept entries are closer than each of them. Per block of query rows we take the
entries no farther than the query's farthest correct match (for a reasonable model a small part of the
row), sort just those, and binary-search the correct matches in them. The full row sort that fastreid
does (``np.argsort(distmat, axis=1)``) is what dominates its run time.

Ties: fastreid orders equal distances by numpy's default (unstable) argsort, so when a correct match
and a kept wrong match are at *exactly* the same distance their order — and thus AP/CMC — is whatever
that sort produced. For such queries (rare with float features, common with integer distances) we rank
the row with the very same ``np.argsort`` call on the same values, which reproduces fastreid exactly (numpy
sorts every row of a 2-D array independently, so one row gives the same order as the whole matrix).
Ties among correct matches only, or among wrong matches only, change nothing and need no fallback.

Curve length: fastreid cuts ``max_rank`` to the gallery size, cuts each query's curve at its kept gallery
size and stacks the curves, which only works when they all have one length (numpy >= 1.24 raises
otherwise). We return the curve up to ``min(max_rank, G, longest kept gallery)`` — fastreid's result
whenever it has one — and a query whose kept gallery ends earlier counts as found from then on.

CUHK03's single-gallery-shot variant (``use_metric_cuhk03=True``) is refused: fastreid draws it from
numpy's global RNG, so there is no fixed answer to reproduce.
"""
import logging

import numpy as np

from .checks import as_distmat, as_labels, check_block_size, check_max_rank, check_no_nan_rows

logger = logging.getLogger(__name__)

__all__ = ["evaluate_rank", "UnsupportedProtocolError", "GalleryRanker", "RankAccumulator"]

#: rows per block are chosen so that one block holds about this many distances (32 MB in float32);
#: the temporaries of one block stay within a few hundred MB even when every entry must be sorted.
ENTRIES_PER_BLOCK = 1 << 23


class UnsupportedProtocolError(ValueError, NotImplementedError):
    """An evaluation protocol this module does not implement (caught as ValueError or NotImplementedError)."""


def block_rows(num_gallery, block_size=None):
    """Query rows per block: ``block_size`` if given, else as many as keep a block near ENTRIES_PER_BLOCK."""
    if block_size is not None:
        return block_size
    return max(1, ENTRIES_PER_BLOCK // max(1, num_gallery))


def _float32_keys(values):
    """uint32 keys with the order and equalities of float16/float32 ``values`` (no NaN). Consumes ``values``.

    The IEEE bit pattern of a float orders like the float itself once negative numbers have all bits
    flipped and positive ones the sign bit set; ``+ 0.0`` first turns -0.0 into +0.0 (they compare equal).
    """
    values = values.astype(np.float32, copy=False)
    values += np.float32(0.0)
    bits = values.view(np.int32)
    flip = bits >> np.int32(31)  # arithmetic shift: all ones for negatives, zero otherwise
    flip |= np.int32(-(1 << 31))
    bits ^= flip
    return bits.view(np.uint32)


def _float64_keys(values):
    """uint64 keys with the order and equalities of ``values`` cast to float64 (no NaN); same trick as above."""
    values = values.astype(np.float64)
    values += 0.0
    bits = values.view(np.int64)
    flip = bits >> np.int64(63)
    flip |= np.int64(-(1 << 63))
    bits ^= flip
    return bits.view(np.uint64)


def _row_value_keys(near_count, near_vals, pos_rows, pos_vals):
    """Sortable uint64 keys ``row | value order`` for the near entries and for the correct matches.

    Args:
        near_count: (B,) number of near entries of each row; ``near_vals`` holds them row after row.
        near_vals: (E,) their distances. pos_rows, pos_vals: (P,) rows and distances of the correct matches.

    The row takes the high bits, the value order the rest. float16/float32 values and integers spanning
    less than 2**32 fit exactly in 32 bits. Wider values (float64, big integers) keep only their leading
    ``64 - row bits`` bits: the keys still never order two values the wrong way round, but values that
    differ only in the dropped bits get equal keys, which the caller treats as a tie and resolves
    exactly from the original values.
    """
    num_rows = near_count.size
    if near_vals.dtype == np.bool_:
        near_vals, pos_vals = near_vals.view(np.uint8), pos_vals.view(np.uint8)
    dtype = near_vals.dtype
    low_bits = None
    if dtype in (np.float32, np.float16):
        near_low, pos_low, low_bits = _float32_keys(near_vals), _float32_keys(pos_vals.copy()), 32
    elif np.issubdtype(dtype, np.integer):
        lo = min(int(near_vals.min()), int(pos_vals.min()))
        hi = max(int(near_vals.max()), int(pos_vals.max()))
        if hi - lo < (1 << 32):
            wide = np.uint64 if np.issubdtype(dtype, np.unsignedinteger) else np.int64
            near_low = (near_vals.astype(wide) - wide(lo)).astype(np.uint32)
            pos_low = (pos_vals.astype(wide) - wide(lo)).astype(np.uint32)
            low_bits = 32
    if low_bits is None:
        row_bits = max(1, (num_rows - 1).bit_length())
        if np.issubdtype(dtype, np.unsignedinteger):
            near_low, pos_low = near_vals.astype(np.uint64), pos_vals.astype(np.uint64)
        elif np.issubdtype(dtype, np.integer):
            sign = np.uint64(1 << 63)
            near_low = near_vals.astype(np.int64).view(np.uint64) ^ sign
            pos_low = pos_vals.astype(np.int64).view(np.uint64) ^ sign
        else:
            near_low, pos_low = _float64_keys(near_vals), _float64_keys(pos_vals)
        near_low >>= np.uint64(row_bits)
        pos_low >>= np.uint64(row_bits)
        low_bits = 64 - row_bits
    row_high = np.arange(num_rows, dtype=np.uint64) << np.uint64(low_bits)
    near_keys = np.repeat(row_high, near_count)
    near_keys |= near_low
    pos_keys = row_high[pos_rows]
    pos_keys |= pos_low
    return near_keys, pos_keys, low_bits


def _segment_starts(counts):
    """Exclusive prefix sums: where each of the segments of the given lengths starts."""
    starts = np.zeros(counts.size, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


def _lowest(dtype):
    if dtype == np.bool_:
        return False
    return -np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).min


class GalleryRanker:
    """Per-query match positions for blocks of a distance matrix against one fixed gallery.

    Args:
        g_pids, g_camids: (G,) gallery identities and cameras.
    """

    def __init__(self, g_pids, g_camids):
        self.g_pids = np.asarray(g_pids)
        self.g_camids = np.asarray(g_camids)
        self.num_gallery = self.g_pids.shape[0]
        # gallery indices grouped by identity: a query's same-identity entries are one slice of this
        self._by_pid = np.argsort(self.g_pids, kind="stable")
        self._sorted_pids = self.g_pids[self._by_pid]

    def same_identity_pairs(self, q_pids):
        """(row, gallery index) of every gallery entry sharing the identity of query ``row`` (few per query)."""
        lo = np.searchsorted(self._sorted_pids, q_pids, side="left")
        hi = np.searchsorted(self._sorted_pids, q_pids, side="right")
        counts = hi - lo
        rows = np.repeat(np.arange(q_pids.shape[0]), counts)
        within = np.arange(rows.size) - np.repeat(_segment_starts(counts), counts)
        cols = self._by_pid[np.repeat(lo, counts) + within]
        return rows, cols

    def rank_block(self, dist, q_pids, q_camids):
        """Rank statistics of one block of queries.

        Args:
            dist: (B, G) numpy distances of B queries to the gallery (any real dtype, no NaN).
            q_pids, q_camids: (B,) identities and cameras of those queries.

        Returns:
            dict of (B,) arrays: ``valid`` (bool, the query has a correct match after removal), ``ap``,
            ``inp`` (float64, 0 where not valid), ``first_hit`` (int64, 1-based position of the first correct
            match, 0 where not valid) and ``kept`` (int64, gallery size after removal).
        """
        num_q, num_g = dist.shape
        q_pids = np.asarray(q_pids)
        q_camids = np.asarray(q_camids)

        rows, cols = self.same_identity_pairs(q_pids)
        same_cam = self.g_camids[cols] == q_camids[rows]
        pos_rows, pos_cols = rows[~same_cam], cols[~same_cam]
        drop_rows, drop_cols = rows[same_cam], cols[same_cam]
        n_pos = np.bincount(pos_rows, minlength=num_q)
        kept = num_g - np.bincount(drop_rows, minlength=num_q)
        valid = n_pos > 0

        out = {
            "valid": valid,
            "ap": np.zeros(num_q, dtype=np.float64),
            "inp": np.zeros(num_q, dtype=np.float64),
            "first_hit": np.zeros(num_q, dtype=np.int64),
            "kept": kept.astype(np.int64),
        }
        if not valid.any():
            return out

        pos_vals = dist[pos_rows, pos_cols]
        # every kept entry that can precede a correct match is no farther than the farthest one
        farthest = np.full(num_q, _lowest(dist.dtype), dtype=dist.dtype)
        np.maximum.at(farthest, pos_rows, pos_vals)
        near = dist <= farthest[:, None]
        near[~valid] = False
        near[drop_rows, drop_cols] = False
        near_count = np.count_nonzero(near, axis=1)
        near_vals = dist[near]  # row-major: grouped by row
        del near
        row_start = _segment_starts(near_count)

        # one sorted key per entry: row in the high bits, value order in the low bits, so a binary
        # search for a correct match finds how many entries of *its* row are closer
        near_keys, pos_keys, low_bits = _row_value_keys(near_count, near_vals, pos_rows, pos_vals)
        del near_vals
        near_keys.sort()

        pos_keys.sort()  # correct matches grouped by row, closest first
        pos_rows = (pos_keys >> np.uint64(low_bits)).astype(np.int64)
        pos_first = _segment_starts(n_pos)
        # kept entries of the row strictly closer than each correct match, and those at the same key
        left = np.searchsorted(near_keys, pos_keys, side="left")
        closer = left - row_start[pos_rows]
        same_key = np.searchsorted(near_keys, pos_keys, side="right") - left
        # the same counts among the correct matches alone
        left = np.searchsorted(pos_keys, pos_keys, side="left")
        closer_pos = left - pos_first[pos_rows]
        same_key_pos = np.searchsorted(pos_keys, pos_keys, side="right") - left
        j = np.arange(pos_keys.size) - pos_first[pos_rows]  # 0-based index among the query's matches
        # position = wrong matches closer + correct matches before + 1 (equal correct matches may come in
        # any order: the sequence of hits and misses is the same)
        position = (closer - closer_pos) + j + 1

        ap = np.bincount(pos_rows, weights=(j + 1) / position, minlength=num_q)
        last = pos_first + n_pos - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            out["ap"] = np.where(valid, ap / n_pos, 0.0)
            out["inp"] = np.where(valid, n_pos / position[np.minimum(last, position.size - 1)], 0.0)
        out["first_hit"] = np.where(valid, position[np.minimum(pos_first, position.size - 1)], 0)

        # a wrong match at exactly a correct match's distance: order decided by fastreid's argsort
        tied_rows = np.unique(pos_rows[same_key > same_key_pos])
        for r in tied_rows:
            self._rank_row_like_fastreid(out, r, dist[r], q_pids[r], q_camids[r])
        return out

    def _rank_row_like_fastreid(self, out, r, row, q_pid, q_camid):
        """Overwrite query ``r``'s statistics from a full sort of its (G,) distance ``row``."""
        order = np.argsort(row)  # default kind on the same values: the order fastreid's argsort gives
        same = self.g_pids[order] == q_pid
        dropped = same & (self.g_camids[order] == q_camid)
        position = np.flatnonzero(same[~dropped]) + 1
        k = np.arange(1, position.size + 1)
        out["ap"][r] = np.sum(k / position) / position.size
        out["inp"][r] = position.size / position[-1]
        out["first_hit"][r] = position[0]


class RankAccumulator:
    """Collects :meth:`GalleryRanker.rank_block` results and reduces them to ``(cmc, all_AP, all_INP)``."""

    def __init__(self, num_gallery, max_rank):
        self.num_gallery = num_gallery
        self.max_rank = max_rank
        self._parts = []

    def add(self, block_stats):
        self._parts.append(block_stats)

    def result(self):
        stats = {k: np.concatenate([p[k] for p in self._parts]) for k in self._parts[0]}
        valid = stats["valid"]
        num_valid = int(valid.sum())
        if num_valid == 0:
            raise ValueError(
                "no query has a valid match: for each of the {} queries, every gallery entry of its identity "
                "is from the query's own camera (those are ignored) or there is none. Check that q_pids/g_pids "
                "and q_camids/g_camids are the right arrays and that query and gallery come from the same "
                "test set".format(valid.size))

        max_rank = self.max_rank
        if self.num_gallery < max_rank:
            logger.info("max_rank %d is larger than the gallery (%d entries); cmc stops at rank %d",
                        max_rank, self.num_gallery, self.num_gallery)
            max_rank = self.num_gallery
        # fastreid cuts each query's curve at min(max_rank, its kept gallery size); when every kept
        # gallery is shorter than max_rank its curve has the (common) kept length. A query whose kept
        # gallery ends earlier has found its match by then, so its curve continues at 1.
        length = int(min(max_rank, stats["kept"][valid].max()))
        hits = np.bincount(np.minimum(stats["first_hit"][valid] - 1, length), minlength=length + 1)[:length]
        cmc = np.cumsum(hits).astype(np.float32) / np.float32(num_valid)
        return cmc, stats["ap"][valid], stats["inp"][valid]


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, use_metric_cuhk03=False,
                  use_cython=None, *, block_size=None):
    """CMC curve, per-query AP and INP of a query×gallery distance matrix (Market1501 protocol).

    Args:
        distmat: (Q, G) numpy array or torch tensor, smaller = more similar; any real dtype, no NaN.
        q_pids, q_camids: (Q,) query identities and cameras.
        g_pids, g_camids: (G,) gallery identities and cameras.
        max_rank: length of the CMC curve; cut to the gallery size when larger (as fastreid does).
        use_metric_cuhk03: not supported (raises); see the error for why and what to use.
        use_cython: ignored; accepted so that calls written for fastreid's ``evaluate_rank`` work unchanged.
        block_size: query rows ranked at a time (default: about 8M distances per block).

    Returns:
        ``(cmc, all_AP, all_INP)``: cmc (L,) float32 fractions in [0, 1] averaged over the V queries that
        have a correct match, ``L = min(max_rank, G, longest kept gallery)`` (usually ``max_rank``); all_AP and
        all_INP (V,) float64 arrays, one entry per such query, in query order. ``np.mean(all_AP)`` is the mAP.

    Raises:
        ValueError: bad shapes, NaN distances, or no query with a correct match.
    """
    if use_metric_cuhk03:
        raise UnsupportedProtocolError(
            "use_metric_cuhk03=True (CUHK03 single-gallery-shot protocol) is not supported: fastreid's version "
            "draws one gallery image per identity at random from numpy's global RNG, 10 times per query, so its "
            "numbers are not reproducible to compare with. Use use_metric_cuhk03=False (the Market1501 protocol "
            "that fastreid's evaluator uses for every dataset), or call "
            "fastreid.evaluation.rank.evaluate_rank(..., use_metric_cuhk03=True, use_cython=False)")
    distmat = as_distmat(distmat)
    num_q, num_g = distmat.shape
    rows = "distmat of shape {} has {} query rows".format(tuple(distmat.shape), num_q)
    cols = "distmat of shape {} has {} gallery columns".format(tuple(distmat.shape), num_g)
    q_pids = as_labels(q_pids, "q_pids", num_q, rows)
    q_camids = as_labels(q_camids, "q_camids", num_q, rows)
    g_pids = as_labels(g_pids, "g_pids", num_g, cols)
    g_camids = as_labels(g_camids, "g_camids", num_g, cols)
    max_rank = check_max_rank(max_rank)
    step = block_rows(num_g, check_block_size(block_size))
    if num_q == 0 or num_g == 0:
        raise ValueError("no query has a valid match: distmat has shape {} (empty query or gallery set)".format(
            tuple(distmat.shape)))

    ranker = GalleryRanker(g_pids, g_camids)
    acc = RankAccumulator(num_g, max_rank)
    for start in range(0, num_q, step):
        block = np.ascontiguousarray(distmat[start:start + step])
        check_no_nan_rows(block, start)
        acc.add(ranker.rank_block(block, q_pids[start:start + step], q_camids[start:start + step]))
    return acc.result()
