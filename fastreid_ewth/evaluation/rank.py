"""CMC / mAP / mINP under the Market1501 protocol, exact, one block of query rows at a time.

Same meaning and values as fastreid's Python ``eval_market1501`` (``fastreid.evaluation.rank``), bit for
bit (AP and INP as float64, cmc as float32):

* for each query, gallery entries with the query's identity *and* camera ("junk") are removed from its
  ranking;
* a query whose remaining gallery holds no entry of its identity is skipped (not counted anywhere);
* ``cmc[r]`` is the fraction of counted queries whose first correct match is at rank ``<= r + 1``;
* AP is ``mean_k k / pos_k`` over the query's correct matches at 1-based positions ``pos_1 < pos_2 < ...``
  of the kept ranking, INP is ``K / pos_K``.

Why this is written out here: no library computes these numbers exactly without fastreid's full
``np.argsort`` of every row (its Cython version still sorts every row, and needs a compiler); ranking
libraries (faiss, sklearn) give top-k lists or approximate, differently tied, metrics. The full sort is
what dominates fastreid's run time, and its (Q, G) index matrix what dominates its memory.

How: the metrics depend only on the positions of the correct matches (a few per query), i.e. on how many
kept entries are closer than each of them. For each row we sort a copy of its distances (numpy's
vectorised sort of plain values, about five times faster than the index-carrying ``argsort``) and
binary-search the row's correct-match distances in it: for a correct match at distance ``d``

    ``wrong kept entries closer = (entries < d) - (correct matches < d) - (junk < d)``

and its position is that number plus its index among the query's correct matches (closest first) plus
one. The correct matches and junk are few, so their counts come from small sorted arrays, and nothing
has to be removed from the row. When the entries no farther than a query's farthest correct match are a
small part of the row (a trained model), only those are copied out and sorted. Rows are handed to a pool
of threads (numpy's sorts release the GIL), so the work runs on all of torch's CPU threads; it never
needs more than a few row-sized buffers per thread. (Binary-searching every entry of a block among its
row's correct-match distances instead, with ``torch.searchsorted``, is a scalar search per entry: measured
several times slower than the value sort.)

Ties (``ties=``): when a correct match and a kept wrong match are at *exactly* the same distance, their
order decides AP/CMC, and the two rules differ only there:

* ``"fastreid"`` (the default of the functions here, which mirror fastreid's): the order of numpy's
  default (unstable) ``np.argsort``, which fastreid ranks with. Nothing short of running that sort
  predicts it, and it is not one order: numpy 2 on AVX2/AVX-512 CPUs sorts with SIMD kernels whose tie
  order differs from numpy 1.x's introsort (and from each other), so fastreid's own number for a tied
  row depends on the machine. The binary search sees such a tie for free (``entries == d`` exceeds the
  correct matches and junk at ``d``); for those rows we run the very same ``np.argsort`` on the same
  values (numpy sorts every row of a 2-D array independently, so one row gives the same order as
  fastreid's whole matrix) and read, in the slice of equal distances, which kept entries precede each
  tied correct match. Only that slice is looked at; the other correct matches keep their counted
  positions.
* ``"pessimistic"`` (``ExactReidEvaluator``'s default, ``TEST.TIES``): every kept wrong entry at a
  correct match's distance ranks before it, i.e. a tie counts against the model. The same numbers on
  every machine, never above fastreid's, and free: the formula above counts entries ``<= d`` instead of
  ``< d``, and no argsort is needed. A model whose features collapsed (all distances equal) gets the worst
  ranking instead of whatever the sort produced.

Ties among correct matches only, or with junk only, change nothing under either rule.

Such ties are not rare: float32 distances near 1 are spaced 6e-8..1.2e-7 apart, so with untrained
(random) 2048-d features about a quarter of the rows have one at Market1501 size and nine in ten at
MSMT17 size. Under ``"fastreid"`` each of those rows costs fastreid's argsort on top of the value sort
(measured: an argsort of an 82k-entry row costs about 0.4x that row's share of the matrix product on
this project's 2-core machine), which is then the floor of the cost; when most rows need it, rows skip
the value sort and are argsorted right away (the binary searches then read the row through the
argsort's indices, numpy's ``sorter``); the numbers are the same either way.

AP bit for bit: fastreid sums ``k / pos`` over a float64 array with zeros at the wrong entries, which numpy
adds by pairwise summation (blocks of 128, eight interleaved partial sums, halves split at multiples of
eight). The grouping decides the last bit, so :func:`numpy_sum_of_sparse` adds the few nonzero terms in
exactly that grouping (adding the zeros changes no partial sum).

Curve length: fastreid cuts ``max_rank`` to the gallery size, cuts each query's curve at its kept gallery
size and stacks the curves, which only works when they all have one length (numpy >= 1.24 raises
otherwise). We return the curve up to ``min(max_rank, G, longest kept gallery)`` -- fastreid's result
whenever it has one -- and a query whose kept gallery ends earlier counts as found from then on.

CUHK03's single-gallery-shot variant (``use_metric_cuhk03=True``) is refused: fastreid draws it from
numpy's global RNG, so there is no fixed answer to reproduce.
"""
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .checks import as_distmat, as_labels, check_block_size, check_max_rank, check_no_nan_rows

logger = logging.getLogger(__name__)

__all__ = ["evaluate_rank", "UnsupportedProtocolError", "GalleryRanker", "RankAccumulator",
           "numpy_sum_of_sparse", "TIES", "TEST_TIES_DEFAULT", "check_ties"]

#: how a correct match and a wrong one at exactly the same distance are ordered (see the module doc)
TIES = ("fastreid", "pessimistic")

#: the rule of ``TEST.TIES``, i.e. of ``ExactReidEvaluator``, the trainer's and ``--eval-only``'s evaluator:
#: the same numbers on every machine, and no argsort of tied rows
TEST_TIES_DEFAULT = "pessimistic"

#: rows per block are chosen so that one block holds about this many distances (128 MB in float32). The
#: per-row work needs a few row-sized buffers per thread only; large blocks let the matrix product stream
#: the gallery once per many query rows (at MSMT17 size, 8M-entry blocks of ~100 rows made the product
#: 20-50 % slower than these ~400-row ones on 2 CPUs; 800-row blocks were no faster).
ENTRIES_PER_BLOCK = 1 << 25

#: rows are argsorted right away, without the value sort first, when more than this fraction of the rows
#: ranked just before needed the argsort (on 82k-entry float32 rows the value sort costs about a fifth of
#: the argsort; the binary searches then read the row through the argsort's indices)
DIRECT_ARGSORT_TIE_RATE = 0.75

#: rows sort only their entries no farther than the farthest correct match when, in the rows ranked just
#: before, those were on average less than this fraction of a row (copying them out costs two
#: passes over the row; sorting the whole row costs about ten)
NEAR_SORT_RATE = 0.25

#: the rates above are running averages over about this many recent rows
RATE_MEMORY = 64

#: numpy's pairwise summation: blocks of at most this many elements are summed with 8 partial sums
_PW_BLOCKSIZE = 128
_PW_UNROLL = 8


class UnsupportedProtocolError(ValueError, NotImplementedError):
    """An evaluation protocol this module does not implement (caught as ValueError or NotImplementedError)."""


def check_ties(ties):
    if ties not in TIES:
        raise ValueError(
            "ties must be one of {} (TEST.TIES), got {!r}: 'pessimistic' ranks a correct match after the wrong "
            "ones at exactly its distance (machine-independent), 'fastreid' orders them as fastreid's "
            "np.argsort does".format(", ".join(repr(t) for t in TIES), ties))
    return ties


def block_rows(num_gallery, block_size=None):
    """Query rows per block: ``block_size`` if given, else as many as keep a block near ENTRIES_PER_BLOCK."""
    if block_size is not None:
        return block_size
    return max(1, ENTRIES_PER_BLOCK // max(1, num_gallery))


def _segment_starts(counts):
    """Exclusive prefix sums: where each of the segments of the given lengths starts."""
    starts = np.zeros(counts.size, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


def numpy_sum_of_sparse(seg, index, values, lengths):
    """``np.sum`` of float64 arrays that are zero except at a few places, with numpy's exact rounding.

    Args:
        seg, index: (E,) int arrays, sorted by ``(seg, index)`` with no pair repeated: array ``seg[e]``
            holds ``values[e]`` at ``index[e]``, zeros elsewhere.
        values: (E,) float64.
        lengths: (S,) length of each array (``index < lengths[seg]``).

    Returns:
        (S,) float64, element ``s`` equal to ``np.sum`` of the dense array ``s`` (0.0 for one with no entry),
        bit for bit with numpy 2.x; numpy 1.x (1.23 tested) rounds some sums of long arrays otherwise, in the
        last bit.

    numpy adds a contiguous float64 array pairwise: an array of more than 128 elements is split at
    ``n2 = n // 2 - (n // 2) % 8`` and the two sums added; one of 8..128 elements is summed as 8 interleaved
    partial sums (element i into sum i % 8, up to the last multiple of 8), combined as
    ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``, then the remaining elements are added one by one;
    fewer than 8 are added one by one. Zeros leave every partial sum unchanged, so adding the nonzero
    values of each partial sum in index order and combining the partial sums the same way gives the same
    bits. Each value finds its leaf by descending the (per-array) split tree; the leaves are summed with
    ``np.bincount`` (which adds its weights in array order) and the tree is folded back level by level.
    """
    seg = np.asarray(seg, dtype=np.int64)
    index = np.asarray(index, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.zeros(lengths.size, dtype=np.float64)
    if seg.size == 0:
        return out

    # descend: start and size of each value's node, level by level, until every node is a leaf
    lo = np.zeros_like(index)
    size = lengths[seg].copy()
    depth = np.zeros_like(index)
    starts = [lo]
    while True:
        split = size > _PW_BLOCKSIZE
        if not split.any():
            break
        half = size // 2
        half -= half % _PW_UNROLL
        right = split & (index >= lo + half)
        lo = np.where(right, lo + half, lo)
        size = np.where(split, np.where(right, size - half, half), size)
        depth += split
        starts.append(lo)
    starts = np.stack(starts, axis=1)  # starts[e, d]: start of e's node at depth d (for d <= depth[e])

    # leaves: consecutive values with the same (array, leaf start)
    first = np.ones(seg.size, dtype=bool)
    first[1:] = (seg[1:] != seg[:-1]) | (lo[1:] != lo[:-1])
    leaf = np.cumsum(first) - 1
    num_leaves = int(leaf[-1]) + 1
    offset = index - lo
    main = (size >= _PW_UNROLL) & (offset < size - size % _PW_UNROLL)
    lanes = np.bincount(leaf[main] * _PW_UNROLL + offset[main] % _PW_UNROLL, weights=values[main],
                        minlength=num_leaves * _PW_UNROLL).reshape(num_leaves, _PW_UNROLL)
    r = lanes.T
    blocks = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    rest = ~main
    # each leaf's combined partial sums first, then its remaining values in order
    value = np.bincount(np.concatenate([np.arange(num_leaves), leaf[rest]]),
                        weights=np.concatenate([blocks, values[rest]]), minlength=num_leaves)

    # fold the tree: nodes in (array, start) order; two siblings are adjacent once deeper levels are folded
    rep = np.flatnonzero(first)  # a value of each node, to read the node's ancestors from
    node_seg = seg[rep]
    node_depth = depth[rep]
    for d in range(int(node_depth.max()), 0, -1):
        at = np.flatnonzero(node_depth == d)
        parent = starts[rep[at], d - 1]
        new = np.ones(at.size, dtype=bool)
        new[1:] = (node_seg[at[1:]] != node_seg[at[:-1]]) | (parent[1:] != parent[:-1])
        group = np.cumsum(new) - 1
        sums = np.bincount(group, weights=value[at])  # left + right (or the only child)
        keep = np.ones(rep.size, dtype=bool)
        keep[at[~new]] = False
        value[at[new]] = sums
        node_depth[at[new]] = d - 1
        rep, node_seg, node_depth, value = rep[keep], node_seg[keep], node_depth[keep], value[keep]
    out[node_seg] = value  # 0.0 + root: numpy starts the reduction from the identity
    return out


class _RowState(threading.local):
    """Per-thread row buffers of one ranker (reused from block to block)."""

    def buffers(self, num_g, dtype):
        row = getattr(self, "row", None)
        if row is None or row.dtype != dtype or row.shape[0] != num_g:
            self.row = np.empty(num_g, dtype=dtype)
            self.near = np.empty(num_g, dtype=bool)
            self.mark = np.zeros(num_g, dtype=np.uint8)  # 1: correct match, 2: junk, 0: kept wrong entry
        return self.row, self.near, self.mark


class GalleryRanker:
    """Per-query match positions for blocks of a distance matrix against one fixed gallery.

    Args:
        g_pids, g_camids: (G,) gallery identities and cameras.
        num_threads: threads for the per-row work (default: ``torch.get_num_threads()``).
        ties: ``"fastreid"`` or ``"pessimistic"``: how a correct and a wrong match at exactly the same
            distance are ordered (see the module doc).

    How rows are sorted adapts to the rows ranked just before (the numbers never depend on it):

    * ``"near"``: when few entries are closer than a query's farthest correct match (a trained model),
      only those are copied out and sorted;
    * ``"sort"``: otherwise the whole row is sorted;
    * ``"direct"`` (``ties="fastreid"`` only): when most rows had an exact tie, every row is argsorted
      right away (it is needed anyway for those rows) and the binary searches read the row through its indices.

    (Checking a row for ties before sorting it, by hashing the bit patterns of its distances against
    its correct matches', was tried: at MSMT17 size with random features it saved under 2 % of the
    ranking's time, within the measurement noise.)
    """

    def __init__(self, g_pids, g_camids, num_threads=None, ties="fastreid"):
        self.ties = check_ties(ties)
        self.g_pids = np.asarray(g_pids)
        self.g_camids = np.asarray(g_camids)
        self.num_gallery = self.g_pids.shape[0]
        # gallery indices grouped by identity: a query's same-identity entries are one slice of this
        self._by_pid = np.argsort(self.g_pids, kind="stable")
        self._sorted_pids = self.g_pids[self._by_pid]
        self.num_threads = max(1, int(num_threads or torch.get_num_threads()))
        self._state = _RowState()
        # running averages over the recent rows: the fraction that needed the argsort, and the fraction of
        # a row's entries no farther than its farthest correct match (they choose how rows are sorted)
        self._tie_rate = 0.0
        self._near_rate = 1.0
        #: rows with a correct match tied to a kept wrong one, and rows ranked, over all blocks so far
        self.rows_tied = 0
        self.rows_ranked = 0

    def same_identity_pairs(self, q_pids):
        """(row, gallery index) of every gallery entry sharing the identity of query ``row`` (few per query).

        Grouped by row, gallery indices ascending within a row.
        """
        lo = np.searchsorted(self._sorted_pids, q_pids, side="left")
        hi = np.searchsorted(self._sorted_pids, q_pids, side="right")
        counts = hi - lo
        rows = np.repeat(np.arange(q_pids.shape[0]), counts)
        within = np.arange(rows.size) - np.repeat(_segment_starts(counts), counts)
        cols = self._by_pid[np.repeat(lo, counts) + within]
        return rows, cols

    def rank_block(self, dist, q_pids, q_camids, offset=None):
        """Rank statistics of one block of queries.

        Args:
            dist: (B, G) numpy distances of B queries to the gallery (any real dtype, no NaN). With
                ``offset``, ``dist`` holds values ``v`` whose distances are ``offset - v`` computed in
                ``dist``'s dtype (cosine: similarities, ``offset=1``); not modified either way.
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
        junk_rows, junk_cols = rows[same_cam], cols[same_cam]
        n_pos = np.bincount(pos_rows, minlength=num_q)
        n_junk = np.bincount(junk_rows, minlength=num_q)
        kept = (num_g - n_junk).astype(np.int64)
        valid = n_pos > 0

        out = {
            "valid": valid,
            "ap": np.zeros(num_q, dtype=np.float64),
            "inp": np.zeros(num_q, dtype=np.float64),
            "first_hit": np.zeros(num_q, dtype=np.int64),
            "kept": kept,
        }
        if not valid.any():
            return out

        if offset is not None:
            offset = dist.dtype.type(offset)
        pos_vals = dist[pos_rows, pos_cols]
        junk_vals = dist[junk_rows, junk_cols]
        if offset is not None:
            pos_vals = offset - pos_vals
            junk_vals = offset - junk_vals
        work = _BlockWork(dist, offset, pos_rows, pos_vals, pos_cols, n_pos, junk_rows, junk_vals, junk_cols, n_junk)
        valid_rows = np.flatnonzero(valid)
        tied = self._run(work, valid_rows)
        self.rows_tied += tied
        self.rows_ranked += valid_rows.size

        position = work.position  # every correct match's 1-based position, each row's ascending
        row_of = np.repeat(np.arange(num_q), n_pos)
        k = np.arange(position.size) - np.repeat(work.pos_start, n_pos) + 1  # 1-based index among the row's
        ap_sum = numpy_sum_of_sparse(row_of, position - 1, k / position, kept)
        first = work.pos_start[valid]
        last = first + n_pos[valid] - 1
        out["ap"][valid] = ap_sum[valid] / n_pos[valid]
        out["inp"][valid] = n_pos[valid] / position[last].astype(np.float64)
        out["first_hit"][valid] = position[first]
        return out

    def _run(self, work, valid_rows):
        """Rank ``valid_rows`` of ``work`` on the thread pool; returns how many had a correct/wrong tie."""
        threads = min(self.num_threads, valid_rows.size)
        # small chunks: rows that need the argsort cost several times the others, and the way of sorting
        # is chosen again for each chunk
        chunk = max(1, min(16, valid_rows.size // (8 * threads)))
        chunks = [valid_rows[i:i + chunk] for i in range(0, valid_rows.size, chunk)]
        if threads <= 1:
            return sum(self._rank_rows(work, rows) for rows in chunks)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return sum(pool.map(lambda rows: self._rank_rows(work, rows), chunks))

    def _rank_rows(self, work, rows):
        """Fill ``work.position`` for ``rows``; returns how many had a correct/wrong tie."""
        dist, offset = work.dist, work.offset
        row_buf, near_buf, mark = self._state.buffers(dist.shape[1], work.dtype)
        by_argsort = self.ties == "fastreid"
        if by_argsort and self._tie_rate > DIRECT_ARGSORT_TIE_RATE:
            mode = "direct"
        elif self._near_rate < NEAR_SORT_RATE:
            mode = "near"
        else:
            mode = "sort"
        near_total = 0

        def load(r):  # the row's distances, as fastreid has them
            if offset is None:
                np.copyto(row_buf, dist[r])
            else:
                np.subtract(offset, dist[r], out=row_buf)

        tied_rows = 0
        for r in rows:
            ps, pn = work.pos_start[r], work.n_pos[r]
            pv = work.pos_sorted[ps:ps + pn]

            # sorted values of (at least) every entry no farther than the farthest correct match
            load(r)
            order = None
            srow, sorter = row_buf, None
            if mode == "direct":
                order = np.argsort(row_buf)  # fastreid's call: default kind, same values
                sorter = order  # the binary searches read the row through it
            elif mode == "near":
                np.less_equal(row_buf, pv[-1], out=near_buf)
                srow = row_buf[near_buf]
                srow.sort()
            else:
                srow.sort()

            lt = np.searchsorted(srow, pv, side="left", sorter=sorter)
            le = np.searchsorted(srow, pv, side="right", sorter=sorter)
            near_total += le[-1]
            position = lt + work.base[ps:ps + pn]
            # a kept wrong entry at exactly the distance of a correct match
            tie = (le - lt) > work.excluded_equal[ps:ps + pn]
            if tie.any():
                tied_rows += 1
                if not by_argsort:  # pessimistic: the kept wrong entries at d all come first
                    position = le + work.base[ps:ps + pn] - work.excluded_equal[ps:ps + pn]
                    work.position[ps:ps + pn] = position
                    continue
                if order is None:
                    if mode == "sort":
                        load(r)  # the sort was in place
                    order = np.argsort(row_buf)
                self._untie(work, r, position, lt, le, tie, order, mark)
            work.position[ps:ps + pn] = position
        # threads update these without a lock: a lost update only delays the choice of mode
        weight = min(1.0, len(rows) / RATE_MEMORY)
        self._tie_rate += weight * (tied_rows / len(rows) - self._tie_rate)
        self._near_rate += weight * (near_total / (len(rows) * dist.shape[1]) - self._near_rate)
        return tied_rows

    @staticmethod
    def _untie(work, r, position, lt, le, tie, order, mark):
        """Positions of row ``r``'s correct matches that tie with a kept wrong entry, from fastreid's order.

        The entries at one distance ``d`` are ``order[lt:le]`` (``lt`` entries are closer); each tied
        correct match's position is the number of kept entries closer than ``d`` plus the kept entries
        before it in that slice, plus one.
        """
        ps, pn = work.pos_start[r], work.n_pos[r]
        js, jn = work.junk_start[r], work.n_junk[r]
        pc, jc = work.pos_cols[ps:ps + pn], work.junk_cols[js:js + jn]
        mark[pc] = 1
        mark[jc] = 2
        tied = np.flatnonzero(tie)  # closest first: the slices (one per tied distance) come in order
        new = np.ones(tied.size, dtype=bool)
        new[1:] = lt[tied[1:]] != lt[tied[:-1]]
        first = tied[new]
        lo, sizes = lt[first], le[first] - lt[first]
        starts = _segment_starts(sizes)
        kind = mark[order[np.repeat(lo - starts, sizes) + np.arange(sizes.sum())]]
        mark[pc] = 0
        mark[jc] = 0
        is_kept = kind != 2
        kept_to = np.cumsum(is_kept)
        kept_before = kept_to - is_kept - np.repeat(np.concatenate([[0], kept_to])[starts], sizes)
        correct = kind == 1
        slice_of = np.repeat(np.arange(first.size), sizes)[correct]
        kept_closer = lt[first] - work.junk_lt[ps + first]
        position[tied] = kept_closer[slice_of] + kept_before[correct] + 1
        position.sort()


class _BlockWork:
    """One block's correct matches and junk, and the per-row outputs (each thread writes its own rows).

    Per correct match, sorted by (row, distance): ``pos_sorted`` its distance, ``base`` and
    ``excluded_equal`` such that, with ``lt``/``le`` the entries of the row closer than / no farther than it,
    ``position = lt + base`` and a kept wrong entry ties with it iff ``le - lt > excluded_equal``;
    ``junk_lt`` the junk entries closer than it.
    """

    def __init__(self, dist, offset, pos_rows, pos_vals, pos_cols, n_pos, junk_rows, junk_vals, junk_cols, n_junk):
        self.dist = dist
        self.offset = offset
        self.dtype = dist.dtype
        self.n_pos, self.pos_start, self.pos_cols = n_pos, _segment_starts(n_pos), pos_cols
        self.n_junk, self.junk_start, self.junk_cols = n_junk, _segment_starts(n_junk), junk_cols
        order = np.lexsort((pos_vals, pos_rows))  # rows stay grouped: pos_rows is ascending
        self.pos_sorted = pos_vals[order]
        num = pos_rows.size
        within = np.arange(num) - self.pos_start[pos_rows]  # index among the row's correct matches
        # correct matches of the same row strictly closer / no farther: the runs of equal values
        new = np.ones(num, dtype=bool)
        new[1:] = (pos_rows[1:] != pos_rows[:-1]) | (self.pos_sorted[1:] != self.pos_sorted[:-1])
        run = np.cumsum(new) - 1
        run_start = np.flatnonzero(new)
        run_end = np.append(run_start[1:], num)
        own_lt = run_start[run] - self.pos_start[pos_rows]
        own_le = run_end[run] - self.pos_start[pos_rows]
        self.junk_lt = _count_before(pos_rows, self.pos_sorted, junk_rows, junk_vals, self.junk_start, False)
        junk_le = _count_before(pos_rows, self.pos_sorted, junk_rows, junk_vals, self.junk_start, True)
        self.base = within + 1 - own_lt - self.junk_lt
        self.excluded_equal = (own_le - own_lt) + (junk_le - self.junk_lt)
        self.position = np.zeros(num, dtype=np.int64)


def _count_before(rows, values, other_rows, other_values, other_start, equal_too):
    """For each (row, value): how many of the ``other`` values of the same row are smaller (or equal too).

    Both inputs are grouped by ascending row; a stable merge by (row, value, which) does it at once.
    """
    if other_rows.size == 0:
        return np.zeros(rows.size, dtype=np.int64)
    num = rows.size
    which = np.concatenate([np.full(num, int(equal_too)), np.full(other_rows.size, int(not equal_too))])
    merged = np.lexsort((which, np.concatenate([values, other_values]), np.concatenate([rows, other_rows])))
    is_other = merged >= num
    before = np.cumsum(is_other) - is_other
    out = np.empty(num, dtype=np.int64)
    mine = merged[~is_other]
    out[mine] = before[~is_other] - other_start[rows[mine]]
    return out


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
                  use_cython=None, *, block_size=None, ties="fastreid"):
    """CMC curve, per-query AP and INP of a query×gallery distance matrix (Market1501 protocol).

    Args:
        distmat: (Q, G) numpy array or torch tensor, smaller = more similar; any real dtype, no NaN.
        q_pids, q_camids: (Q,) query identities and cameras.
        g_pids, g_camids: (G,) gallery identities and cameras.
        max_rank: length of the CMC curve; cut to the gallery size when larger (as fastreid does).
        use_metric_cuhk03: not supported (raises); see the error for why and what to use.
        use_cython: ignored; accepted so that calls written for fastreid's ``evaluate_rank`` work unchanged.
        block_size: query rows ranked at a time (default: about 32M distances per block).
        ties: ``"fastreid"`` (fastreid's numbers to the last bit, on this machine) or ``"pessimistic"`` (a
            correct match tied with wrong ones ranks after them): see the module doc.

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
    check_ties(ties)
    if num_q == 0 or num_g == 0:
        raise ValueError("no query has a valid match: distmat has shape {} (empty query or gallery set)".format(
            tuple(distmat.shape)))

    ranker = GalleryRanker(g_pids, g_camids, ties=ties)
    acc = RankAccumulator(num_g, max_rank)
    for start in range(0, num_q, step):
        block = distmat[start:start + step]  # rows are copied one at a time by the ranker
        check_no_nan_rows(block, start)
        acc.add(ranker.rank_block(block, q_pids[start:start + step], q_camids[start:start + step]))
    return acc.result()
