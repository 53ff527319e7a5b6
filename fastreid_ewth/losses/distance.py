"""Euclidean distances between features, floored so that gradients stay finite, and their gradients.

``d(i, j) = sqrt(max(||f_i - f_j||², 1e-12))`` (``docs/losses.md``). Where the squared distance is below the
floor (two features coincide) the distance is the constant ``1e-6`` and passes no gradient, exactly
as ``sqrt(clamp(x, min=1e-12))`` does under autograd.

Each computation comes as a forward (values plus what its gradient needs) and a backward (vector-
Jacobian product w.r.t. the features), used by the fused EWTH loss, and wrapped as a differentiable
function (:func:`pairwise_distance`, :func:`anchor_pair_distance`) for use on its own. The hand-
written backwards do less work than autograd would on the same forward: one N×N×D matmul instead of
two for the matrix, and a single pass over the gathered pairs. No double backward.
"""
from typing import NamedTuple, Optional

import torch
from torch.autograd.function import once_differentiable

#: Floor on squared distances, and the distance it gives.
SQUARED_DISTANCE_FLOOR = 1e-12
DISTANCE_FLOOR = 1e-6


# --------------------------------------------------------------------------------------------------
# All pairs: N×N matrix
# --------------------------------------------------------------------------------------------------
def distance_matrix(features, with_inverse=True):
    """``d(i, j)`` for all pairs of ``features`` (N×D, not differentiated here) -> (N×N, N×N or None).

    The second tensor is ``1 / d(i, j)`` where the floor was not hit and 0 where it was: all that
    :func:`distance_matrix_backward` needs besides the features. The diagonal is exactly ``1e-6``.
    """
    # ||a - b||² = ||a||² + ||b||² - 2 a·b from one N×N×D matmul, no N×N×D difference tensor. The
    # squared norms are the Gram diagonal, computed like every other entry, so identical rows give
    # exactly 0 (and no separate pass over the features is needed).
    gram = features @ features.t()
    squared_norms = gram.diagonal()
    squared = gram.mul(-2.0).add_(squared_norms.unsqueeze(1)).add_(squared_norms.unsqueeze(0))
    squared.diagonal().zero_()  # d(i, i) is the floor by definition, whatever the rounding
    live = squared >= SQUARED_DISTANCE_FLOOR if with_inverse else None
    dist = squared.clamp_(min=SQUARED_DISTANCE_FLOOR).sqrt_()
    return dist, (torch.div(live, dist) if with_inverse else None)


def distance_matrix_backward(features, inv_dist, grad_dist, grad_features=None):
    """Gradient w.r.t. ``features`` (N×D) of ``sum(grad_dist * d)`` (``grad_dist``: N×N).

    ``grad_features`` (N×D), if given, is added to the result (fused into the matmul).
    """
    # d(i, j) moves with f_i and f_j along (f_i - f_j) / d(i, j), so
    #   dL/df_i = sum_j S_ij (f_i - f_j),   S_ij = (G_ij + G_ji) / d(i, j),
    # i.e. rowsum(S) * f - S @ f: a single matmul.
    scale = (grad_dist + grad_dist.t()).mul_(inv_dist)
    row_sums = scale.sum(1, keepdim=True)
    if grad_features is None:
        diagonal_part = row_sums * features
    else:
        diagonal_part = torch.addcmul(grad_features, row_sums, features)
    return torch.addmm(diagonal_part, scale, features, alpha=-1.0)


class _PairwiseDistance(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features):
        dist, inv_dist = distance_matrix(features)
        ctx.save_for_backward(features, inv_dist)
        return dist

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_dist):
        features, inv_dist = ctx.saved_tensors
        return distance_matrix_backward(features, inv_dist, grad_dist)


def pairwise_distance(features):
    """All pairwise distances ``d(i, j)`` of ``features`` (N×D) -> N×N, differentiable.

    The diagonal is exactly ``1e-6``. Call it on ``features.detach()`` when only the values are
    needed, e.g. for mining.
    """
    return _PairwiseDistance.apply(features)


# --------------------------------------------------------------------------------------------------
# Chosen pairs: each anchor to its K partners, plain and element weighted
# --------------------------------------------------------------------------------------------------
class PairCache(NamedTuple):
    """What :func:`pair_distances_backward` needs from the forward."""

    flat_index: torch.Tensor  # K·N long
    diff: torch.Tensor  # K×N×D, f_i - f_index[k, i]
    weighted_diff: Optional[torch.Tensor]  # K×N×D, w_i ⊙ diff, or None
    weights: Optional[torch.Tensor]  # N×D, or None
    inv_dist: torch.Tensor  # (1 or 2)×K×N, 1/d where the floor was not hit, else 0


def pair_distances(features, index, weights=None):
    """Distances from every anchor to its partners (nothing differentiated here).

    Args:
        features: N×D.
        index: K×N long; ``index[k, i]`` is anchor ``i``'s k-th partner (hard positive, hard negative).
        weights: optional N×D element weights ``w`` of each anchor (constants).

    Returns:
        ``(dist, cache)``: ``dist`` is 1×K×N (plain) or 2×K×N (plain, then element weighted:
        ``sqrt(max(||w_i ⊙ (f_i - f_j)||², 1e-12))``); ``cache`` feeds :func:`pair_distances_backward`.

    Computed from the feature differences themselves, not from the matrix expansion of
    :func:`distance_matrix`, so coinciding features give exactly the floor.
    """
    num_partners, n = index.shape
    flat_index = index.reshape(-1)
    partners = features.index_select(0, flat_index).view(num_partners, n, -1)
    diff = torch.sub(features, partners, out=partners)
    # vector_norm reads its input once; a dot product would first write diff² (K×N×D).
    dist = diff.new_empty(1 if weights is None else 2, num_partners, n)
    torch.linalg.vector_norm(diff, dim=-1, out=dist[0])
    weighted_diff = None
    if weights is not None:
        weighted_diff = diff * weights
        torch.linalg.vector_norm(weighted_diff, dim=-1, out=dist[1])
    # sqrt(max(q, 1e-12)) = max(sqrt(q), 1e-6); no gradient where the floor is hit
    inv_dist = torch.div(dist >= DISTANCE_FLOOR, dist.clamp_(min=DISTANCE_FLOOR))
    return dist, PairCache(flat_index, diff, weighted_diff, weights, inv_dist)


def pair_distances_backward(cache, grad_dist):
    """Gradient w.r.t. the features (N×D) of ``sum(grad_dist * dist)`` for ``pair_distances``'s output."""
    # d = ||w ⊙ x||, x = f_i - f_j  =>  dd/df_i = w ⊙ w ⊙ x / d = -dd/df_j  (w = 1: plain)
    coeff = grad_dist.mul(cache.inv_dist).unsqueeze(-1)
    if cache.weighted_diff is None:
        grad_diff = cache.diff * coeff[0]
    else:
        grad_diff = cache.weighted_diff * cache.weights
        grad_diff.mul_(coeff[1]).addcmul_(cache.diff, coeff[0])
    # sum over the K partners as K - 1 adds: a reduction over the outer dim is slower
    num_partners = grad_diff.shape[0]
    grad_features = grad_diff[0].clone() if num_partners == 1 else torch.add(grad_diff[0], grad_diff[1])
    for k in range(2, num_partners):
        grad_features.add_(grad_diff[k])
    grad_features.index_add_(0, cache.flat_index, grad_diff.view(cache.flat_index.numel(), -1), alpha=-1.0)
    return grad_features


class _AnchorPairDistance(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, index, weights):
        dist, ctx.cache = pair_distances(features, index, weights)
        return dist

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_dist):
        return pair_distances_backward(ctx.cache, grad_dist), None, None


def anchor_pair_distance(features, index, weights=None):
    """Differentiable :func:`pair_distances`: ``d`` (K×N), ``d[k, i] = d(i, index[k, i])``, and with
    ``weights`` (N×D, detached here) also ``d^w`` (K×N). ``features``: N×D, ``index``: K×N long."""
    if weights is None:
        return _AnchorPairDistance.apply(features, index, None)[0]
    plain, weighted = _AnchorPairDistance.apply(features, index, weights.detach())
    return plain, weighted
