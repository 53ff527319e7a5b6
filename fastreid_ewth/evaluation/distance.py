"""Query×gallery distances, whole or one block of query rows at a time.

The metrics mean exactly what fastreid's ``fastreid.utils.compute_dist.build_dist`` means by them, computed
with the same torch operations so the numbers are the same:

* ``"cosine"``: ``1 - <q / max(|q|, 1e-12), g / max(|g|, 1e-12)>`` (``F.normalize`` then a matrix product);
* ``"euclidean"``: the *squared* Euclidean distance ``|q|² + |g|² - 2 <q, g>`` (no square root; it ranks
  the same as the distance and is what fastreid ranks by).

Row ``i`` of a block depends only on query ``i``, so ranking block by block ranks the full matrix.
"""
import torch
import torch.nn.functional as F

__all__ = ["METRICS", "check_metric", "DistanceBlocks", "block_bounds", "iter_distance_blocks", "pairwise_distance"]

METRICS = ("cosine", "euclidean")

#: BLAS switches to other kernels for products with very few rows, and those round differently from the
#: same rows inside a big product (seen with MKL for fewer than ~12 rows). Computing at least this many
#: rows at a time keeps blocked distances bit-identical to fastreid's one-shot matrix.
MIN_BLOCK_ROWS = 16


def check_metric(metric):
    if metric not in METRICS:
        raise ValueError(
            "metric must be one of {} (fastreid's TEST.METRIC), got {!r}; re-ranking (jaccard) is "
            "TEST.RERANK.ENABLED in ExactReidEvaluator".format(", ".join(repr(m) for m in METRICS), metric))
    return metric


class DistanceBlocks:
    """Distances from blocks of queries to one prepared gallery.

    Args:
        gallery_feats: (G, D) float tensor on the CPU (not modified).
        metric: "cosine" or "euclidean".
        num_buffers: output buffers, used in turn: a block stays valid for this many calls.

    The gallery is prepared once (normalised copy for cosine, squared norms for euclidean); reusable
    output buffers keep the memory of a run at gallery + ``num_buffers`` blocks.

    :meth:`products` is the matrix product alone; :attr:`offset` says how distances follow from it:
    for cosine ``offset = 1`` and ``distance = 1 - product`` (the ranker applies that per row, saving a
    pass over the block), for euclidean ``offset = None`` and the product already is the distance.
    :attr:`may_overflow` is True after a block whose distances may hold NaN: euclidean with a squared
    norm that overflowed (finite features too large for the dtype; then ``inf - inf`` can occur). Cosine
    distances of finite features are always finite.
    """

    def __init__(self, gallery_feats, metric, num_buffers=1):
        self.metric = check_metric(metric)
        if metric == "cosine":
            # the transposed view is the very operand of fastreid's ``torch.mm(x, y.t())``, so the BLAS call
            # and its rounding are fastreid's (a contiguous transposed copy was measured no faster)
            self._gallery_t = F.normalize(gallery_feats, p=2, dim=1).t()
            self.offset = 1
        else:
            self._gallery_t = gallery_feats.t()
            self._gallery_sq = torch.pow(gallery_feats, 2).sum(dim=1)
            self.offset = None
        self._gallery_overflow = metric == "euclidean" and not bool(torch.isfinite(self._gallery_sq).all())
        self.may_overflow = self._gallery_overflow
        self._buffers = [None] * max(1, int(num_buffers))
        self._next = 0

    @torch.no_grad()
    def products(self, query_block):
        """(B, G) cosine similarities (cosine) or distances (euclidean) of ``query_block`` (B, D).

        The returned tensor is overwritten ``num_buffers`` calls later: use (or copy) it before then.
        """
        num_rows, num_g = query_block.shape[0], self._gallery_t.shape[1]
        i = self._next
        self._next = (i + 1) % len(self._buffers)
        if self._buffers[i] is None or self._buffers[i].shape[0] < num_rows:
            self._buffers[i] = None  # free the old buffer before allocating the larger one
            self._buffers[i] = torch.empty((num_rows, num_g), dtype=self._gallery_t.dtype)
        out = self._buffers[i][:num_rows]
        if self.metric == "cosine":
            torch.mm(F.normalize(query_block, p=2, dim=1), self._gallery_t, out=out)
        else:
            query_sq = torch.pow(query_block, 2).sum(dim=1, keepdim=True)
            self.may_overflow = self._gallery_overflow or not bool(torch.isfinite(query_sq).all())
            torch.add(query_sq, self._gallery_sq, out=out)
            out.addmm_(query_block, self._gallery_t, beta=1, alpha=-2)
        return out

    @torch.no_grad()
    def __call__(self, query_block):
        """(B, G) distances of ``query_block`` (B, D) to the gallery (overwritten as :meth:`products`)."""
        out = self.products(query_block)
        if self.offset is not None:
            out.neg_().add_(self.offset)  # (-s) + 1 rounds exactly like 1 - s
        return out


def block_bounds(num_query, block_rows):
    """``(first, start, stop)`` of each query block: rows ``start:stop`` are computed as part of rows
    ``first:stop``, which has at least MIN_BLOCK_ROWS rows when the query set has (see MIN_BLOCK_ROWS)."""
    step = max(block_rows, MIN_BLOCK_ROWS)
    for start in range(0, num_query, step):
        yield max(0, min(start, num_query - MIN_BLOCK_ROWS)), start, min(start + step, num_query)


def iter_distance_blocks(query_feats, gallery_feats, metric, block_rows):
    """Yield ``(start, stop, dist)`` for consecutive query blocks; ``dist`` is (stop - start, G).

    Blocks have ``max(block_rows, MIN_BLOCK_ROWS)`` rows; a short last block is computed together with
    the rows before it (only its own rows are yielded). ``dist`` is overwritten by the next block.
    """
    blocks = DistanceBlocks(gallery_feats, metric)
    for first, start, stop in block_bounds(query_feats.shape[0], block_rows):
        yield start, stop, blocks(query_feats[first:stop])[start - first:]


def pairwise_distance(query_feats, gallery_feats, metric):
    """The whole (Q, G) distance matrix as a new tensor (for re-ranking and ROC, which need all of it)."""
    return DistanceBlocks(gallery_feats, metric)(query_feats).clone()
