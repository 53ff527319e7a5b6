"""The EWTH loss family: ``ewth_loss`` and its eight variants (formulas: ``docs/losses.md``).

Work done for one batch, whatever the variant:

1. one N×N distance matrix (one N×N×D matmul), for mining and, in the N variants, for ``μ_an``;
2. hard mining on its values -> indices ``p(i)``, ``n(i)``;
3. ``d_ap``, ``d_an`` (and ``d^w_ap``, ``d^w_an``) from the 2N gathered (anchor, partner)
   differences, one pass each;
4. per-anchor terms, averaged over the anchors that form a triplet;
5. on request, the batch's mining diagnostics (:mod:`.diagnostics`) from the same indices and
   distances, without gradient.

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
import warnings

import torch
from torch.autograd.function import once_differentiable

from .autocast import autocast_disabled
from .diagnostics import DIAGNOSTIC_NAMES, mined_diagnostics
from .distance import distance_matrix, distance_matrix_backward, pair_distances, pair_distances_backward
from .element_weight import element_weights
from .mining import hard_example_mining, mean_negative_weights
from .normalize import normalize_features
from .options import check_ewth_options
from .terms import DISTANCES, ELEMENT_WEIGHTED, MEAN_NEGATIVE, VARIANTS, ranking

#: The eight variant names, in the order of the paper's tables.
EWTH_VARIANTS = tuple(VARIANTS)

#: Names of the terms in the dict ``ewth_loss`` returns.
TERM_NAMES = ("loss_triplet", "loss_mean_neg", "loss_ew")


def ewth_loss(features, targets, classifier_weight, *, diagnostics=False, **options):
    """EWTH-family metric loss of one batch.

    Args:
        features: N×D pooled, pre-BNNeck embeddings (gradient flows back into them).
        targets: N integer identity labels; identities may have any number of images.
        classifier_weight: C×D BNNeck classifier weight; **detached** here (only its values pick
            the element weights). May be ``None`` for variants without the EW term.
        diagnostics: also return the batch's mining diagnostics (:mod:`.diagnostics`), taken from
            this computation's own mining.
        **options: the options of :data:`~fastreid_ewth.losses.options.EWTH_OPTIONS`, defaults from
            there; checked by :func:`~fastreid_ewth.losses.options.check_ewth_options`:

            - ``variant``: one of :data:`EWTH_VARIANTS`;
            - ``margin``: ``m`` of the (Half) TriHard term; ``margin <= 0`` switches *every* term to
              the soft margin ``softplus(a - b)`` (then ``mean_neg_margin`` and ``ew_margin`` are unused);
            - ``mean_neg_margin``: ``φ`` of the mean-Negative term;
            - ``ew_margin``: ``α`` of the Element-Weighted term;
            - ``ew_threshold``: ``t``; element weights whose normalised difference is below it are 0;
            - ``norm_feat``: ``none``, ``l2`` (unit length) or ``max`` (batch divided by its largest
              norm), applied to ``features`` before everything else, whatever the variant;
            - ``scale``: every term is multiplied by it.

    Returns:
        dict of scalar tensors, exactly the terms the variant uses, among ``loss_triplet``
        (TriHard or Half TriHard), ``loss_mean_neg`` and ``loss_ew``. The loss is their sum.
        Each term is a mean over the anchors that have another positive and a negative.
        Differentiable once w.r.t. ``features`` (no double backward).

        With ``diagnostics=True``, a pair ``(terms, diagnostics)``: ``diagnostics`` maps
        ``hinge_active``, ``d_ap``, ``d_an`` and (variants with the EW term) ``ew_kept`` to 0-dim
        tensors without gradient, NaN when no anchor forms a triplet.
    """
    options = check_ewth_options(**options)
    variant, margin, norm_feat = options["variant"], options["margin"], options["norm_feat"]
    terms = VARIANTS[variant]
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
    report = {} if diagnostics else None
    if features.shape[0] == 0:
        zero = features.sum() * 0.0
        values = [zero for _ in terms]
        if report is not None:
            names = DIAGNOSTIC_NAMES if uses_ew else DIAGNOSTIC_NAMES[:-1]
            report.update((name, features.new_full((), float("nan"))) for name in names)
    else:
        weight = classifier_weight.detach().to(features.dtype) if uses_ew else None
        margins = tuple(options[t.margin_arg] for t in terms)
        args = (targets.long(), weight, terms, margins, margin <= 0, options["ew_threshold"], report)
        with autocast_disabled(features.device.type):
            values = _EWTHLoss.apply(normalize_features(features, norm_feat), *args)
    scale = options["scale"]
    out = {term.key: (value if scale == 1.0 else value * scale) for term, value in zip(terms, values)}
    return (out, report) if diagnostics else out


class _EWTHLoss(torch.autograd.Function):
    """features (N×D) -> one scalar per term; see the module docstring."""

    @staticmethod
    def forward(ctx, features, targets, weight, terms, margins, soft, threshold, report):
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
        if report is not None:  # the diagnostics, from this very mining (forward runs without gradient)
            trihard_margin = next(m for term, m in zip(terms, margins) if term.key == "loss_triplet")
            report.update(mined_diagnostics(distances["d_ap"], distances["d_an"], valid,
                                            0.0 if soft else trihard_margin, weights))

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
        return grad_features, None, None, None, None, None, None, None


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
