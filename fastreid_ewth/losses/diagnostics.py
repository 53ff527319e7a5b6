"""What the TriHard family sees in one batch, as plain numbers to log: no gradient, no fastreid.

For the anchors that form a triplet (another image of their identity and an image of another one;
the same anchors every loss term averages over):

- ``hinge_active``: share of anchors whose TriHard hinge is open, ``d_ap - d_an + m > 0`` — the
  anchors that send gradient at all. With the soft margin (``m <= 0``) every anchor sends some
  gradient, so the share counts the anchors whose ranking is wrong, ``d_ap > d_an``.
- ``d_ap``, ``d_an``: mean distance to the hardest positive and to the hardest negative.
- ``ew_kept`` (only with ``element_weighted``): mean share of the D feature elements whose element
  weight is non-zero, i.e. that the EW term looks at.

Distances are those the loss sees: of the features after ``norm_feat``, with the same mining, so
they are in the loss's units (unit-sphere distances for ``l2``).
"""
import torch

from .distance import anchor_pair_distance, pairwise_distance
from .element_weight import element_weights
from .mining import hard_example_mining
from .normalize import normalize_features

__all__ = ["DIAGNOSTIC_NAMES", "triplet_diagnostics"]

#: Keys :func:`triplet_diagnostics` can return, in this order.
DIAGNOSTIC_NAMES = ("hinge_active", "d_ap", "d_an", "ew_kept")


@torch.no_grad()
def triplet_diagnostics(features, targets, classifier_weight=None, margin=0.3, ew_threshold=0.1,
                        norm_feat="none", element_weighted=False):
    """Batch statistics of hard mining and of the TriHard hinge.

    Args:
        features: N×D pooled, pre-BNNeck embeddings (read only; detached here).
        targets: N integer identity labels.
        classifier_weight: C×D classifier weight (detached); needed only with ``element_weighted``.
        margin: TriHard margin ``m``; ``<= 0`` means the soft margin.
        ew_threshold: element-weight threshold ``t``.
        norm_feat: ``none``, ``l2`` or ``max``, as the loss applies it.
        element_weighted: also return ``ew_kept``.

    Returns:
        dict of 0-dim float32 tensors keyed by :data:`DIAGNOSTIC_NAMES` (``ew_kept`` only with
        ``element_weighted``), each a mean over the qualifying anchors; an empty dict when no anchor
        qualifies (nothing to average, and a NaN would poison the logs).
    """
    if element_weighted and classifier_weight is None:
        raise ValueError("element_weighted=True needs the C×D classifier_weight to compute element weights; "
                         "got None.")
    device_type = features.device.type
    if torch.is_autocast_enabled(device_type):
        # under AMP the distance matmul would run in half precision; the loss computes in fp32, so must this
        with torch.autocast(device_type, enabled=False):
            return _diagnostics(features, targets, classifier_weight, margin, ew_threshold, norm_feat,
                                element_weighted)
    return _diagnostics(features, targets, classifier_weight, margin, ew_threshold, norm_feat, element_weighted)


def _diagnostics(features, targets, classifier_weight, margin, ew_threshold, norm_feat, element_weighted):
    features = normalize_features(features.detach().float(), norm_feat)
    targets = targets.long()
    if features.shape[0] == 0:
        return {}
    # the same mining as the loss: the loss's own distances, not a re-derivation that could drift
    mined = hard_example_mining(pairwise_distance(features), targets)
    valid = mined.valid
    num_valid = int(valid.sum())
    if num_valid == 0:
        return {}
    d_ap, d_an = anchor_pair_distance(features, torch.stack([mined.pos_index, mined.neg_index]))
    d_ap, d_an = d_ap[valid], d_an[valid]
    slack = d_ap - d_an + (margin if margin > 0 else 0.0)
    stats = {
        "hinge_active": (slack > 0).float().mean(),
        "d_ap": d_ap.mean(),
        "d_an": d_an.mean(),
    }
    if element_weighted:
        weights = element_weights(classifier_weight.detach().float(), targets, mined.neg_index, ew_threshold)
        stats["ew_kept"] = (weights[valid] > 0).float().mean()
    return stats
