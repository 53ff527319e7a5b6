"""Element weights of the EW term: which feature dimensions separate an anchor's identity from its
hard negative's identity, as seen by the classifier (``docs/losses.md``).

    δ = |W[y_i] - W[y_n(i)]|,   δ̂ = δ / (max_k δ_k + 1e-12),   w_k = 0 if δ̂_k < t else 1 + δ̂_k
"""
import functools

import torch


def element_weights(classifier_weight, targets, neg_index, threshold):
    """Per-anchor element weights -> N×D, no gradient.

    Args:
        classifier_weight: C×D classifier weight ``W``; **detached** here (the metric loss must not
            move the classifier).
        targets: N integer labels, rows of ``W``.
        neg_index: N long, each anchor's hard negative ``n(i)``.
        threshold: ``t``; dimensions whose normalised difference is below it get weight 0.
    """
    weight = classifier_weight.detach()
    rows = weight.index_select(0, torch.cat([targets, targets[neg_index]])).view(2, targets.numel(), -1)
    delta = torch.sub(rows[0], rows[1]).abs_()
    delta_hat = delta.div_(delta.amax(1, keepdim=True).add_(1e-12))
    # w = 1 + δ̂ where δ̂ >= t, else 0, written as threshold-then-add: a boolean mask over N×D
    # (compare + masked_fill) costs several times more than these two arithmetic passes.
    # threshold keeps x > bound, so bound is the largest value of this dtype below t.
    return torch.threshold(delta_hat, _below(threshold, delta_hat.dtype), -1.0).add_(1.0)


@functools.lru_cache(maxsize=64)
def _below(value, dtype):
    """The largest number of ``dtype`` below ``value`` (as that dtype rounds it), as a Python float."""
    t = torch.tensor(value, dtype=dtype)
    return torch.nextafter(t, t.new_tensor(float("-inf"))).item()
