"""What the TriHard family sees in one batch, as plain numbers to log: no gradient, no fastreid.

``ewth_loss(..., diagnostics=True)`` returns them next to the loss terms, computed in the loss's own
forward from its own mining and its own per-anchor distances: no second distance matrix, no second
mining. For the anchors that form a triplet (another image of their identity and an image of another
one; the same anchors every loss term averages over):

- ``hinge_active``: share of anchors whose TriHard hinge is open, ``d_ap - d_an + m > 0`` — the
  anchors that send gradient at all. With the soft margin (``m <= 0``) every anchor sends some
  gradient, so the share counts the anchors whose ranking is wrong, ``d_ap > d_an``.
- ``d_ap``, ``d_an``: mean distance to the hardest positive and to the hardest negative.
- ``ew_kept`` (variants with the EW term only): mean share of the D feature elements whose element
  weight is non-zero, i.e. that the EW term looks at.

Distances are those the loss sees: of the features after ``norm_feat``, in the loss's units
(unit-sphere distances for ``l2``). Each value is a mean over the qualifying anchors, so it is NaN
when no anchor qualifies; :func:`diagnostic_values` turns the dict into floats with one
device-to-host copy and drops such a batch.
"""
import math

import torch

__all__ = ["DIAGNOSTIC_NAMES", "diagnostic_values", "mined_diagnostics"]

#: Keys of the diagnostics, in this order (``ew_kept`` only for the variants with the EW term).
DIAGNOSTIC_NAMES = ("hinge_active", "d_ap", "d_an", "ew_kept")


def mined_diagnostics(d_ap, d_an, valid, margin, weights=None):
    """The diagnostics of one batch from what the loss mined -> dict of 0-dim tensors.

    Args:
        d_ap, d_an: N distances of every anchor to its hard positive and hard negative.
        valid: N bool, the anchors that form a triplet.
        margin: the TriHard margin ``m``; ``<= 0`` means the soft margin.
        weights: N×D element weights of the anchors (EW variants), or ``None`` (no ``ew_kept``).

    Means over the ``valid`` anchors, in the dtype of ``d_ap``; NaN when there is none.
    """
    dtype = d_ap.dtype
    slack = d_ap - d_an + (margin if margin > 0 else 0.0)
    rows = [(slack > 0).to(dtype), d_ap, d_an]
    if weights is not None:
        rows.append((weights > 0).sum(1).to(dtype) / weights.shape[1])
    # one product for all the means; 0 / 0 = NaN when no anchor qualifies
    count = valid.sum().to(dtype)
    means = torch.mv(torch.stack(rows), valid.to(dtype)).div_(count)
    return dict(zip(DIAGNOSTIC_NAMES, means.unbind(0)))


def diagnostic_values(diagnostics):
    """``{name: float}`` from the tensors of :func:`mined_diagnostics`, with one device-to-host copy.

    Empty when no anchor of the batch formed a triplet (nothing to average, and a NaN would poison
    the logs).
    """
    if not diagnostics:
        return {}
    values = dict(zip(diagnostics, torch.stack([v.detach().float() for v in diagnostics.values()]).tolist()))
    if math.isnan(values.get("hinge_active", 0.0)):  # NaN only when no anchor qualifies: a share of 0/0
        return {}
    return values
