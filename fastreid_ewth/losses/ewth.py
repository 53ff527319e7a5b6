"""The EWTH loss family: ``ewth_loss`` and its eight variants (SPEC §1).

Work done for one batch, whatever the variant:

1. one N×N distance matrix (one N×N×D matmul), for mining and, in the N variants, for ``μ_an``;
2. hard mining on its values -> indices ``p(i)``, ``n(i)``;
3. ``d_ap``, ``d_an`` (and ``d^w_ap``, ``d^w_an``) from the 2N gathered (anchor, partner)
   differences, one pass each;
4. per-anchor terms, averaged over the anchors that form a triplet.

All of it runs in one autograd node with a hand-written backward. At a P×K = 16×4 batch the fixed
cost of recording and replaying the few dozen small operations on N-vectors and N×N matrices
(mining, terms, means) for autograd was as large as the distance arithmetic itself; the backward
here multiplies each term's slope into the distances it differentiates (see :mod:`.terms` for which)
and runs the distance backwards once each: one pass over the gathered pairs, plus one N×N×D matmul
when ``μ_an`` needs gradient.

Anchors with no other image of their identity, or no image of another identity, form no triplet
and contribute nothing: each term is the mean over the *qualifying* anchors only, so a singleton
identity in the batch neither adds to nor dilutes the loss of the others. When no anchor
qualifies, every term is a zero that is still connected to ``features`` (backward gives zeros).
"""
import math
import warnings

import torch
from torch.autograd.function import once_differentiable

from .distance import distance_matrix, distance_matrix_backward, pair_distances, pair_distances_backward
from .element_weight import element_weights
from .mining import hard_example_mining, mean_negative_weights
from .normalize import NORM_FEATS, normalize_features
from .terms import DISTANCES, ELEMENT_WEIGHTED, HALF_TRIHARD, MEAN_NEGATIVE, TRIHARD, ranking

#: Variant -> the terms it sums (SPEC §1 variants table).
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

#: The eight variant names, in the order of the SPEC's tables.
EWTH_VARIANTS = tuple(VARIANTS)

#: Names of the terms in the dict ``ewth_loss`` returns.
TERM_NAMES = ("loss_triplet", "loss_mean_neg", "loss_ew")


def ewth_loss(
    features,
    targets,
    classifier_weight,
    variant="HNEWTH",
    margin=0.3,
    mean_neg_margin=0.3,
    ew_margin=0.3,
    ew_threshold=0.1,
    norm_feat="none",
):
    """EWTH-family metric loss of one batch.

    Args:
        features: N×D pooled, pre-BNNeck embeddings (gradient flows back into them).
        targets: N integer identity labels; identities may have any number of images.
        classifier_weight: C×D BNNeck classifier weight; **detached** here (only its values pick
            the element weights). May be ``None`` for variants without the EW term.
        variant: one of :data:`EWTH_VARIANTS`.
        margin: ``m`` of the (Half) TriHard term; ``margin <= 0`` switches *every* term to the
            soft margin ``softplus(a - b)`` (then ``mean_neg_margin`` and ``ew_margin`` are unused).
        mean_neg_margin: ``φ`` of the mean-Negative term.
        ew_margin: ``α`` of the Element-Weighted term.
        ew_threshold: ``t``; element weights whose normalised difference is below it are 0.
        norm_feat: ``none``, ``l2`` (unit length) or ``max`` (batch divided by its largest norm),
            applied to ``features`` before everything else, whatever the variant.

    Returns:
        dict of scalar tensors, exactly the terms the variant uses, among ``loss_triplet``
        (TriHard or Half TriHard), ``loss_mean_neg`` and ``loss_ew``. The loss is their sum.
        Each term is a mean over the anchors that have another positive and a negative.
        Differentiable once w.r.t. ``features`` (no double backward).
    """
    terms = _check_options(variant, norm_feat, margin, mean_neg_margin, ew_margin, ew_threshold)
    uses_ew = ELEMENT_WEIGHTED in terms
    _check_inputs(features, targets, classifier_weight, uses_ew)
    if variant == "TH_FN" and norm_feat == "none":
        warnings.warn(
            "variant 'TH_FN' with norm_feat='none' is plain TH; set NORM_FEAT to 'l2' (AGW) or 'max' (BoT).",
            stacklevel=2,
        )

    if features.dtype in (torch.float16, torch.bfloat16):
        # Distances of 2048-d features lose too much in half precision; the loss is cheap in fp32.
        features = features.float()
    if features.shape[0] == 0:
        zero = features.sum() * 0.0
        return {term.key: zero for term in terms}

    margins = {"margin": margin, "mean_neg_margin": mean_neg_margin, "ew_margin": ew_margin}
    weight = classifier_weight.detach().to(features.dtype) if uses_ew else None
    args = (targets.long(), weight, terms, tuple(margins[t.margin_arg] for t in terms), margin <= 0, ew_threshold)
    if _autocast_enabled(features.device.type):
        with torch.autocast(features.device.type, enabled=False):
            values = _EWTHLoss.apply(normalize_features(features, norm_feat), *args)
    else:
        values = _EWTHLoss.apply(normalize_features(features, norm_feat), *args)
    return {term.key: value for term, value in zip(terms, values)}


class _EWTHLoss(torch.autograd.Function):
    """features (N×D) -> one scalar per term; see the module docstring."""

    @staticmethod
    def forward(ctx, features, targets, weight, terms, margins, soft, threshold):
        uses_mean_neg = MEAN_NEGATIVE in terms
        uses_ew = weight is not None

        dist, inv_dist = distance_matrix(features, with_inverse=uses_mean_neg)
        mined = hard_example_mining(dist, targets)
        partners = torch.stack([mined.pos_index, mined.neg_index])  # 2×N
        weights = element_weights(weight, targets, mined.neg_index, threshold) if uses_ew else None
        pair_dist, pair_cache = pair_distances(features, partners, weights)

        # rows in the order of DISTANCES: d_ap, d_an[, dw_ap, dw_an][, mu_an]
        rows = list(pair_dist.view(-1, dist.shape[0]).unbind(0))
        names = list(DISTANCES[: len(rows)])
        averaging = None
        if uses_mean_neg:
            averaging = mean_negative_weights(mined.is_pos, dist.dtype)
            rows.append(torch.linalg.vecdot(dist, averaging))
            names.append(MEAN_NEGATIVE.farther)
        distances = dict(zip(names, rows))

        # All terms at once, one row each (T×N); mean over the qualifying anchors as a product with
        # anchor_weight: 1/Q on them, 0 elsewhere.
        valid = mined.valid
        anchor_weight = valid.to(features.dtype) / valid.sum().clamp(min=1)
        closer = torch.stack([distances[term.closer] for term in terms])
        farther = torch.stack([distances[term.farther] for term in terms])
        per_anchor, slopes = ranking(closer, farther, closer.new_tensor(margins).unsqueeze(1), soft)
        values = torch.mv(per_anchor, anchor_weight)

        # d term / d distance = slope × (+1 for a differentiated `closer`, -1 for a differentiated
        # `farther`, 0 for a stop-gradient): a T×len(names) sign table, applied in backward
        signs = [[0.0] * len(names) for _ in terms]
        for row, term in zip(signs, terms):
            if term.grad_closer:
                row[names.index(term.closer)] += 1.0
            if term.grad_farther:
                row[names.index(term.farther)] -= 1.0
        ctx.save_for_backward(features)
        ctx.slopes = slopes.mul_(anchor_weight)
        ctx.signs = slopes.new_tensor(signs)
        ctx.inv_dist, ctx.averaging, ctx.pair_cache = inv_dist, averaging, pair_cache
        return tuple(values.unbind(0))

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_values):
        (features,) = ctx.saved_tensors
        cache = ctx.pair_cache
        # d loss / d (each per-anchor distance), rows in the order of DISTANCES
        grad_terms = ctx.slopes * torch.stack(grad_values).unsqueeze(1)  # T×N
        grad_distances = ctx.signs.t().mm(grad_terms)
        num_pair_rows = cache.inv_dist.shape[0] * cache.inv_dist.shape[1]
        grad_features = pair_distances_backward(cache, grad_distances[:num_pair_rows].view(cache.inv_dist.shape))
        if ctx.averaging is not None:
            grad_dist = grad_distances[num_pair_rows].unsqueeze(1) * ctx.averaging
            grad_features = distance_matrix_backward(features, ctx.inv_dist, grad_dist, grad_features)
        return grad_features, None, None, None, None, None, None


def _autocast_enabled(device_type):
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument, separate CPU query
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _check_options(variant, norm_feat, margin, mean_neg_margin, ew_margin, ew_threshold):
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise ValueError(
            f"Unknown EWTH variant {variant!r}; valid variants are {', '.join(EWTH_VARIANTS)} "
            f"(MODEL.LOSSES.EWTH.VARIANT)."
        )
    if not isinstance(norm_feat, str) or norm_feat not in NORM_FEATS:
        raise ValueError(
            f"Unknown norm_feat {norm_feat!r}; valid values are {', '.join(repr(v) for v in NORM_FEATS)} "
            f"(MODEL.LOSSES.EWTH.NORM_FEAT)."
        )
    for name, value in (("margin", margin), ("mean_neg_margin", mean_neg_margin), ("ew_margin", ew_margin)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name}={value!r} must be a finite number (<= 0 for margin means soft margin).")
    if isinstance(ew_threshold, bool) or not isinstance(ew_threshold, (int, float)) or not 0 <= ew_threshold < 1:
        raise ValueError(
            f"ew_threshold={ew_threshold!r} must be a number in [0, 1): normalised element differences lie "
            f"in [0, 1), so a threshold of 1 or more would zero every weight (paper: 0.1)."
        )
    return VARIANTS[variant]


def _check_inputs(features, targets, classifier_weight, uses_ew):
    if not torch.is_tensor(features) or features.dim() != 2:
        raise ValueError(f"features must be an N×D tensor, got {_describe(features)}.")
    if not torch.is_tensor(targets) or targets.dim() != 1:
        raise ValueError(f"targets must be a 1-D tensor of N labels, got {_describe(targets)}.")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets must hold integer labels, got dtype {targets.dtype}; pass targets.long().")
    if features.shape[0] != targets.shape[0]:
        raise ValueError(
            f"features and targets disagree on the batch size: features {tuple(features.shape)} "
            f"but targets {tuple(targets.shape)}; pass one label per feature row."
        )
    if classifier_weight is None:
        if uses_ew:
            raise ValueError(
                "the EW term needs the classifier weight (C×D) to compute element weights; got None."
            )
        return
    if not torch.is_tensor(classifier_weight) or classifier_weight.dim() != 2:
        raise ValueError(f"classifier_weight must be a C×D tensor, got {_describe(classifier_weight)}.")
    if classifier_weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"classifier_weight {tuple(classifier_weight.shape)} has width {classifier_weight.shape[1]} but the "
            f"features {tuple(features.shape)} have dimension {features.shape[1]}; pass the weight of the "
            f"classifier that reads these (pre-BNNeck) features."
        )
    if targets.numel():
        low, high = (int(v) for v in torch.aminmax(targets))
        num_classes = classifier_weight.shape[0]
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"labels must index rows of classifier_weight {tuple(classifier_weight.shape)} (0..{num_classes - 1}), "
                f"got labels in [{low}, {high}]; check NUM_CLASSES against the dataset's identities."
            )


def _describe(value):
    return f"shape {tuple(value.shape)}" if torch.is_tensor(value) else type(value).__name__
