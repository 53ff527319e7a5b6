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

__all__ = ["METRICS", "check_metric", "DistanceBlocks", "iter_distance_blocks", "pairwise_distance"]

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

    The gallery is prepared once (normalised copy for cosine, squared norms for euclidean); a reusable
    output buffer keeps the memory of a run at gallery + one block.
    """

    def __init__(self, gallery_feats, metric):
        self.metric = check_metric(metric)
        if metric == "cosine":
            self._gallery_t = F.normalize(gallery_feats, p=2, dim=1).t()
        else:
            self._gallery_t = gallery_feats.t()
            self._gallery_sq = torch.pow(gallery_feats, 2).sum(dim=1)
        self._buffer = None

    @torch.no_grad()
    def __call__(self, query_block):
        """(B, G) distances of ``query_block`` (B, D) to the gallery.

        The returned tensor is overwritten by the next call: use (or copy) it before asking for another block.
        """
        num_rows, num_g = query_block.shape[0], self._gallery_t.shape[1]
        if self._buffer is None or self._buffer.shape[0] < num_rows:
            self._buffer = torch.empty((num_rows, num_g), dtype=self._gallery_t.dtype)
        out = self._buffer[:num_rows]
        if self.metric == "cosine":
            torch.mm(F.normalize(query_block, p=2, dim=1), self._gallery_t, out=out)
            out.neg_().add_(1)  # (-s) + 1 rounds exactly like 1 - s
        else:
            query_sq = torch.pow(query_block, 2).sum(dim=1, keepdim=True)
            torch.add(query_sq, self._gallery_sq, out=out)
            out.addmm_(query_block, self._gallery_t, beta=1, alpha=-2)
        return out


def iter_distance_blocks(query_feats, gallery_feats, metric, block_rows):
    """Yield ``(start, stop, dist)`` for consecutive query blocks; ``dist`` is (stop - start, G).

    Blocks have ``max(block_rows, MIN_BLOCK_ROWS)`` rows; a short last block is computed together with
    the rows before it (only its own rows are yielded). ``dist`` is overwritten by the next block.
    """
    blocks = DistanceBlocks(gallery_feats, metric)
    num_q = query_feats.shape[0]
    step = max(block_rows, MIN_BLOCK_ROWS)
    for start in range(0, num_q, step):
        stop = min(start + step, num_q)
        first = max(0, min(start, num_q - MIN_BLOCK_ROWS))
        yield start, stop, blocks(query_feats[first:stop])[start - first:]


def pairwise_distance(query_feats, gallery_feats, metric):
    """The whole (Q, G) distance matrix as a new tensor (for re-ranking and ROC, which need all of it)."""
    return DistanceBlocks(gallery_feats, metric)(query_feats).clone()
