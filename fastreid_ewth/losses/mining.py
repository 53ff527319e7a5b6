"""Which pairs each anchor looks at: hard positive, hard negative, and all negatives on average.

Mining works on distance *values* (no gradient) and returns indices, so the distances that carry
gradient can be gathered afterwards from whichever computation is best for them. Identities may
have any number of images in the batch.
"""
from typing import NamedTuple

import torch


class HardMining(NamedTuple):
    """Result of :func:`hard_example_mining` for N anchors."""

    #: N long, ``p(i) = argmax_{j: y_j = y_i} d(i, j)``; the anchor itself is a candidate.
    pos_index: torch.Tensor
    #: N long, ``n(i) = argmin_{j: y_j != y_i} d(i, j)``; meaningless where ``has_negative`` is False.
    neg_index: torch.Tensor
    #: N×N bool, ``y_i == y_j`` (diagonal True).
    is_pos: torch.Tensor
    #: N bool, the anchor has a positive other than itself.
    has_positive: torch.Tensor
    #: N bool, the anchor has at least one negative.
    has_negative: torch.Tensor

    @property
    def valid(self):
        """N bool: anchors that form a triplet; the others contribute nothing to any term."""
        return self.has_positive & self.has_negative


def hard_example_mining(dist, targets):
    """Hardest positive and negative of every anchor.

    Args:
        dist: N×N distances (only the values are used; detached here).
        targets: N integer labels.
    """
    dist = dist.detach()
    is_pos = targets.unsqueeze(0) == targets.unsqueeze(1)
    pos_index = dist.masked_fill(~is_pos, float("-inf")).argmax(1)
    neg_index = dist.masked_fill(is_pos, float("inf")).argmin(1)
    num_pos = is_pos.sum(1)
    return HardMining(pos_index, neg_index, is_pos, num_pos > 1, num_pos < targets.numel())


def mean_negative_weights(is_pos, dtype=torch.float32):
    """N×N averaging weights: ``1 / #negatives(i)`` at the negatives of row ``i``, 0 elsewhere.

    ``μ_an = (dist * weights).sum(1)``; rows without negatives are all 0 (μ_an = 0, not NaN).
    """
    is_neg = ~is_pos
    return (is_neg / is_neg.sum(1, keepdim=True).clamp_(min=1)).to(dtype)


def mean_negative_distance(dist, is_pos):
    """``μ_an(i) = mean_{j: y_j != y_i} d(i, j)`` -> N.

    Args:
        dist: N×N distances; gradient flows to every negative pair.
        is_pos: N×N bool same-identity mask.
    """
    return torch.linalg.vecdot(dist, mean_negative_weights(is_pos, dist.dtype))
