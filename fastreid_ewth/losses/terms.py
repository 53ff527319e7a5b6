"""The four terms of the EWTH family as data, which terms each variant sums, and the ranking function
they share (formulas: ``docs/losses.md``).

Every term compares, per anchor, a distance that should be small (``closer``) with one that should
be large (``farther``): ``[closer - farther + margin]_+``, or ``softplus(closer - farther)`` with
the soft margin. What distinguishes the terms is which distances they compare and which of the two
receives gradient (the other is a stop-gradient ``sg(·)``).
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F

#: Per-anchor distances the terms read (all N-vectors): hard positive / negative distance, their
#: element-weighted versions, and the mean distance to all negatives.
DISTANCES = ("d_ap", "d_an", "dw_ap", "dw_an", "mu_an")


class Term(NamedTuple):
    key: str  # name in the loss dict
    closer: str  # one of DISTANCES
    farther: str
    grad_closer: bool  # False: sg(closer)
    grad_farther: bool  # False: sg(farther)
    margin_arg: str  # which ewth_loss option is its margin


#: ``[d_ap - d_an + m]_+``
TRIHARD = Term("loss_triplet", "d_ap", "d_an", True, True, "margin")
#: ``[d_ap - sg(d_an) + m]_+``: the hard negative gets no gradient
HALF_TRIHARD = Term("loss_triplet", "d_ap", "d_an", True, False, "margin")
#: ``[sg(d_ap) - μ_an + φ]_+``: pushes all negatives away on average, no gradient through d_ap
MEAN_NEGATIVE = Term("loss_mean_neg", "d_ap", "mu_an", False, True, "mean_neg_margin")
#: ``[d^w_ap - d^w_an + α]_+``: gradient through both
ELEMENT_WEIGHTED = Term("loss_ew", "dw_ap", "dw_an", True, True, "ew_margin")

#: Variant -> the terms it sums, in the order of the paper's tables. TH_FN is TH on normalised
#: features (the ``norm_feat`` option), so its terms are TH's.
VARIANTS = {
    "TH": (TRIHARD,),
    "TH_FN": (TRIHARD,),
    "HTH": (HALF_TRIHARD,),
    "HNTH": (HALF_TRIHARD, MEAN_NEGATIVE),
    "EWTH": (TRIHARD, ELEMENT_WEIGHTED),
    "NEWTH": (TRIHARD, MEAN_NEGATIVE, ELEMENT_WEIGHTED),
    "HEWTH": (HALF_TRIHARD, ELEMENT_WEIGHTED),
    "HNEWTH": (HALF_TRIHARD, MEAN_NEGATIVE, ELEMENT_WEIGHTED),
}


def ranking(closer, farther, margin, soft):
    """Per-anchor term values and their slopes ``d value / d closer`` (= ``-d value / d farther``).

    ``[closer - farther + margin]_+`` (slope: 1 where positive, else 0), or with ``soft``
    ``softplus(closer - farther)`` (slope: its sigmoid). ``closer``, ``farther``: T×N for T terms
    at once (not differentiated); ``margin``: T×1 (ignored when ``soft``).
    """
    gap = closer - farther
    if soft:
        return F.softplus(gap), torch.sigmoid(gap)
    value = gap.add_(margin).relu_()
    return value, torch.sign(value)
