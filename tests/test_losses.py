"""EWTH loss family against an independent, slow, per-anchor float64 computation of its formulas.

The reference below is written from the formulas of docs/losses.md (Lv et al., NeurIPS 2020),
anchor by anchor, with distances taken
from the feature differences themselves (no matrix expansion, no custom backward); its gradient
comes from plain autograd. The implementation must agree in every term's value and in the gradient
w.r.t. the features.
"""
import contextlib
import functools
import math

import pytest
import torch
import torch.nn.functional as F

from fastreid_ewth.losses import (
    EWTH_DEFAULTS,
    EWTH_OPTIONS,
    EWTH_VARIANTS,
    anchor_pair_distance,
    diagnostic_values,
    element_weights,
    ewth_loss,
    hard_example_mining,
    mean_negative_distance,
    pairwise_distance,
)
from fastreid_ewth.losses.autocast import autocast_disabled, autocast_enabled
from fastreid_ewth.losses.terms import ELEMENT_WEIGHTED, HALF_TRIHARD, MEAN_NEGATIVE, TRIHARD, ranking
from fastreid_ewth.modeling import EWTHLoss

TOL = dict(rtol=1e-5, atol=1e-5)

# Variant -> (half TriHard?, mean-Negative?, Element-Weighted?), transcribed from the paper's variants table.
VARIANT_TERMS = {
    "TH": (False, False, False),
    "TH_FN": (False, False, False),
    "HTH": (True, False, False),
    "HNTH": (True, True, False),
    "EWTH": (False, False, True),
    "NEWTH": (False, True, True),
    "HEWTH": (True, False, True),
    "HNEWTH": (True, True, True),
}


# ------------------------------------------------------------------------------------------------
# Reference
# ------------------------------------------------------------------------------------------------
def reference_terms(features, targets, weight, margin, phi, alpha, t, norm_feat):
    """The loss of docs/losses.md, one anchor at a time, float64, autograd only.

    Returns ``{term: (value, gradient w.r.t. features)}`` for the four terms (``trihard``,
    ``half_trihard``, ``mean_neg``, ``ew``); a variant's loss and gradient are the sums over its terms.
    """
    x = features.detach().double().clone().requires_grad_()
    f = x
    if norm_feat == "l2":
        f = f / f.norm(dim=1, keepdim=True)
    elif norm_feat == "max":
        f = f / f.norm(dim=1).max()
    weight = weight.detach().double()
    labels = targets.tolist()
    soft = margin <= 0

    def rank(a, b, m):
        return F.softplus(a - b) if soft else torch.clamp(a - b + m, min=0)

    def dist(a, b, w=None):
        diff = a - b if w is None else w * (a - b)
        return torch.sqrt(torch.clamp((diff * diff).sum(-1), min=1e-12))

    per_anchor = {"trihard": [], "half_trihard": [], "mean_neg": [], "ew": []}
    for i, label in enumerate(labels):
        positives = [j for j, other in enumerate(labels) if other == label]
        negatives = [j for j, other in enumerate(labels) if other != label]
        if len(positives) < 2 or not negatives:
            continue  # no triplet: the anchor contributes nothing
        with torch.no_grad():
            values = dist(f[i], f).tolist()  # d(i, j) for every j, to mine
        p = max(positives, key=lambda j: values[j])  # the anchor itself is a candidate
        n = min(negatives, key=lambda j: values[j])
        d_ap, d_an = dist(f[i], f[p]), dist(f[i], f[n])
        per_anchor["trihard"].append(rank(d_ap, d_an, margin))
        per_anchor["half_trihard"].append(rank(d_ap, d_an.detach(), margin))
        mu_an = dist(f[i], f[negatives]).mean()
        per_anchor["mean_neg"].append(rank(d_ap.detach(), mu_an, phi))
        delta = (weight[label] - weight[labels[n]]).abs()
        delta_hat = delta / (delta.max() + 1e-12)
        w = torch.where(delta_hat < t, torch.zeros_like(delta_hat), 1 + delta_hat)
        per_anchor["ew"].append(rank(dist(f[i], f[p], w), dist(f[i], f[n], w), alpha))

    out = {}
    for term, values in per_anchor.items():
        value = torch.stack(values).mean() if values else x.sum() * 0
        (grad,) = torch.autograd.grad(value, x, retain_graph=True)
        out[term] = (value.detach(), grad)
    return out


def expected_for(variant, reference):
    """Variant -> ({loss name: value}, gradient) from the per-term reference."""
    half, use_mean_neg, use_ew = VARIANT_TERMS[variant]
    used = {"loss_triplet": "half_trihard" if half else "trihard"}
    if use_mean_neg:
        used["loss_mean_neg"] = "mean_neg"
    if use_ew:
        used["loss_ew"] = "ew"
    values = {name: reference[term][0] for name, term in used.items()}
    return values, sum(reference[term][1] for term in used.values())


# ------------------------------------------------------------------------------------------------
# Batches
# ------------------------------------------------------------------------------------------------
NUM_CLASSES = 40
DIM = 2048


def make_batch(counts, seed, dim=DIM, coincide=False):
    """Features clustered by identity, with a different centre spread and noise level per identity
    so that some anchors violate each margin and some do not; labels shuffled in the batch."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randperm(NUM_CLASSES, generator=g)[: len(counts)]
    labels = torch.cat([ids[k].repeat(c) for k, c in enumerate(counts)])
    spread = torch.rand(NUM_CLASSES, 1, generator=g, dtype=torch.float64) * 0.6
    noise = 0.85 + 0.3 * torch.rand(NUM_CLASSES, 1, generator=g, dtype=torch.float64)
    centers = torch.randn(NUM_CLASSES, dim, generator=g, dtype=torch.float64) * spread
    features = centers[labels] + torch.randn(len(labels), dim, generator=g, dtype=torch.float64) * noise[labels]
    if coincide:
        # every image of the first identity identical, and one exact duplicate in the second
        first = labels == ids[0]
        features[first] = features[first][0]
        second = (labels == ids[1]).nonzero().flatten()
        features[second[1]] = features[second[0]]
    order = torch.randperm(len(labels), generator=g)
    weight = torch.randn(NUM_CLASSES, dim, generator=g, dtype=torch.float64) * 0.05
    return features[order], labels[order], weight


PK = [4] * 16
UNEQUAL = [2, 3, 5, 1, 7, 4, 2, 6, 3, 1, 8, 4, 2, 5, 3, 8]  # 64 images, two singleton identities

CASES = {
    # name: (counts, margin, phi, alpha, t, norm_feat, dtype, coincide)
    "hinge": (PK, 0.3, 0.1, 0.2, 0.1, "none", torch.float64, False),
    "soft": (PK, 0.0, 0.1, 0.2, 0.1, "none", torch.float64, False),
    "l2": (PK, 0.3, 0.1, 0.2, 0.1, "l2", torch.float64, False),
    "max": (PK, 0.3, 0.1, 0.2, 0.2, "max", torch.float64, False),
    "unequal": (UNEQUAL, 0.3, 0.1, 0.2, 0.1, "none", torch.float64, False),
    "unequal_soft_l2": (UNEQUAL, -1.0, 0.1, 0.2, 0.1, "l2", torch.float64, False),
    "float32": (PK, 0.3, 0.1, 0.2, 0.1, "none", torch.float32, False),
    "coinciding": (PK, 0.3, 0.1, 0.2, 0.1, "none", torch.float32, True),
}


@functools.lru_cache(maxsize=None)
def case_data(case):
    counts, margin, phi, alpha, t, norm_feat, dtype, coincide = CASES[case]
    features, labels, weight = make_batch(counts, seed=len(case), coincide=coincide)
    features, weight = features.to(dtype), weight.to(dtype)
    kwargs = dict(margin=margin, mean_neg_margin=phi, ew_margin=alpha, ew_threshold=t, norm_feat=norm_feat)
    # The reference runs thousands of small ops; with several threads on a busy machine each one
    # can stall on a descheduled worker (seconds in all), with one thread it takes a fraction.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = reference_terms(features, labels, weight, margin, phi, alpha, t, norm_feat)
    finally:
        torch.set_num_threads(threads)
    return features, labels, weight, kwargs, reference


@pytest.mark.filterwarnings("ignore:variant 'TH_FN'")
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("variant", EWTH_VARIANTS)
def test_matches_reference(variant, case):
    features, labels, weight, kwargs, reference = case_data(case)
    x = features.clone().requires_grad_()
    out = ewth_loss(x, labels, weight, variant=variant, **kwargs)
    sum(out.values()).backward()

    expected, expected_grad = expected_for(variant, reference)
    assert list(out) == list(expected)
    for name in expected:
        assert out[name].dim() == 0 and out[name].dtype == features.dtype
        torch.testing.assert_close(out[name].double(), expected[name], **TOL, msg=f"{name} ({variant}, {case})")
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad.double(), expected_grad, **TOL, msg=f"gradient ({variant}, {case})")


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("variant", ["TH", "TH_FN", "EWTH"])
def test_gradient_matches_finite_differences(variant, soft):
    # A check of the hand-written backward that does not rely on the reference loop at all. Only
    # for the variants without a stop-gradient: for the others the gradient is, by design, not the
    # derivative of the loss value.
    features, labels, weight = make_batch([4, 3, 2, 3], seed=12, dim=6)
    x = features.clone().requires_grad_()
    norm_feat = "l2" if variant == "TH_FN" else "none"

    def loss(f):
        return sum(ewth_loss(f, labels, weight, variant=variant, margin=0.0 if soft else 2.0, mean_neg_margin=1.0,
                             ew_margin=1.0, norm_feat=norm_feat).values())

    assert torch.autograd.gradcheck(loss, (x,))


def test_reference_batches_exercise_both_sides_of_every_margin():
    # Guards the comparison above against being vacuous: in the default batch some anchors are
    # inside and some outside each hinge, so both a wrong hinge and a wrong mining would show.
    features, labels, weight = make_batch(PK, len("hinge"))
    dist = torch.cdist(features, features)
    same = labels[:, None] == labels[None, :]
    d_ap = dist.masked_fill(~same, -1).amax(1)
    d_an = dist.masked_fill(same, math.inf).amin(1)
    mu_an = dist.masked_fill(same, 0).sum(1) / (~same).sum(1)
    for active in (d_ap - d_an + 0.3 > 0, d_ap - mu_an + 0.1 > 0):
        assert 0.1 < active.double().mean() < 0.9


def test_mean_over_qualifying_anchors_only():
    # Two singleton identities: their anchors form no triplet. Dropping their terms (not counting
    # them as zeros) means the loss is the mean over the 62 others.
    features, labels, weight = make_batch(UNEQUAL, 3)
    out = ewth_loss(features, labels, weight, variant="TH", margin=100.0)  # every hinge active
    dist = torch.cdist(features, features)
    same = labels[:, None] == labels[None, :]
    qualifies = same.sum(1) > 1
    per_anchor = dist.masked_fill(~same, -1).amax(1) - dist.masked_fill(same, math.inf).amin(1) + 100.0
    assert qualifies.sum() == 62
    torch.testing.assert_close(out["loss_triplet"], per_anchor[qualifies].mean(), **TOL)


# ------------------------------------------------------------------------------------------------
# Which distances receive gradient
# ------------------------------------------------------------------------------------------------
def three_images():
    # anchor a and positive p of identity 0, one negative n of identity 1 (n has no positive, so it
    # is never an anchor itself: it enters the loss only as the hard negative of a and p).
    g = torch.Generator().manual_seed(5)
    features = torch.randn(3, 16, generator=g, dtype=torch.float64)
    return features, torch.tensor([0, 0, 1]), torch.randn(2, 16, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("variant, negative_moves", [("TH", True), ("HTH", False), ("EWTH", True), ("HEWTH", False)])
def test_trihard_term_gradient_reaches_hard_negative_only_without_half(variant, negative_moves):
    features, labels, weight = three_images()
    x = features.clone().requires_grad_()
    out = ewth_loss(x, labels, weight, variant=variant, margin=100.0, ew_margin=100.0)
    (grad,) = torch.autograd.grad(out["loss_triplet"], x, retain_graph=True)
    assert grad[:2].abs().sum() > 0
    assert (grad[2].abs().sum() > 0) == negative_moves
    if "EW" in variant:  # the EW term moves the hard negative in both
        (grad_ew,) = torch.autograd.grad(out["loss_ew"], x)
        assert grad_ew[2].abs().sum() > 0


@pytest.mark.parametrize("variant", ["HNTH", "NEWTH", "HNEWTH"])
def test_mean_negative_term_gradient_only_through_mean_negative_distance(variant):
    # Identity 0: a, p; identity 1: n1, n2. With a huge φ every N term is active, so the term's
    # gradient must be exactly that of -mean_i μ_an(i): nothing through d_ap.
    g = torch.Generator().manual_seed(6)
    features = torch.randn(4, 16, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    weight = torch.randn(2, 16, generator=g, dtype=torch.float64)
    x = features.clone().requires_grad_()
    out = ewth_loss(x, labels, weight, variant=variant, mean_neg_margin=100.0)
    (grad,) = torch.autograd.grad(out["loss_mean_neg"], x)

    y = features.clone().requires_grad_()
    mu = torch.stack([torch.stack([(y[i] - y[j]).norm() for j in range(4) if labels[j] != labels[i]]).mean()
                      for i in range(4)])
    (expected,) = torch.autograd.grad(-mu.mean(), y)
    torch.testing.assert_close(grad, expected)


def test_term_table_detaches_what_the_paper_says():
    # (closer, farther, gradient to closer, gradient to farther), from the terms table of docs/losses.md
    assert TRIHARD[1:5] == ("d_ap", "d_an", True, True)
    assert HALF_TRIHARD[1:5] == ("d_ap", "d_an", True, False)
    assert MEAN_NEGATIVE[1:5] == ("d_ap", "mu_an", False, True)
    assert ELEMENT_WEIGHTED[1:5] == ("dw_ap", "dw_an", True, True)


@pytest.mark.parametrize("soft", [False, True])
def test_ranking_value_and_slope_match_autograd(soft):
    closer = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    farther = torch.tensor([1.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    value, slope = ranking(closer.detach(), farther, 0.3, soft)
    expected = F.softplus(closer - farther) if soft else torch.clamp(closer - farther + 0.3, min=0)
    (expected_slope,) = torch.autograd.grad(expected.sum(), closer)
    torch.testing.assert_close(value, expected.detach())
    torch.testing.assert_close(slope, expected_slope)


def test_classifier_weight_gets_no_gradient():
    features, labels, weight = make_batch(PK, 1, dim=32)
    weight = weight.clone().requires_grad_()
    x = features.clone().requires_grad_()
    sum(ewth_loss(x, labels, weight, variant="HNEWTH").values()).backward()
    assert weight.grad is None
    assert x.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------
# Numerical safety and degenerate batches
# ------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:variant 'TH_FN'")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm_feat", ["none", "l2", "max"])
@pytest.mark.parametrize("margin", [0.3, 0.0])
def test_coinciding_features_give_finite_gradients(dtype, norm_feat, margin):
    g = torch.Generator().manual_seed(7)
    base = torch.randn(4, 64, generator=g, dtype=dtype)
    batches = [
        base.repeat_interleave(4, 0),  # all images of an identity coincide
        base[:1].repeat(16, 1),  # the whole batch coincides, across identities too
    ]
    labels = torch.arange(4).repeat_interleave(4)
    weight = torch.randn(4, 64, generator=g, dtype=dtype)
    for features in batches:
        for variant in EWTH_VARIANTS:
            x = features.clone().requires_grad_()
            out = ewth_loss(x, labels, weight, variant=variant, margin=margin, norm_feat=norm_feat)
            loss = sum(out.values())
            loss.backward()
            assert torch.isfinite(loss), (variant, norm_feat)
            assert torch.isfinite(x.grad).all(), (variant, norm_feat)


@pytest.mark.parametrize(
    "labels",
    [torch.zeros(8, dtype=torch.long), torch.arange(8), torch.tensor([3])],
    ids=["one-identity", "all-singletons", "single-image"],
)
@pytest.mark.parametrize("variant", EWTH_VARIANTS)
def test_no_qualifying_anchor_gives_connected_zero(labels, variant):
    g = torch.Generator().manual_seed(8)
    x = torch.randn(len(labels), 32, generator=g, requires_grad=True)
    weight = torch.randn(8, 32, generator=g)
    out = ewth_loss(x, labels, weight, variant=variant, norm_feat="l2")
    loss = sum(out.values())
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))


def test_empty_batch_gives_connected_zero():
    x = torch.zeros(0, 32, requires_grad=True)
    out = ewth_loss(x, torch.zeros(0, dtype=torch.long), torch.randn(4, 32))
    loss = sum(out.values())
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()


def test_autocast_and_half_inputs_follow_fp32():
    features, labels, weight = make_batch(PK, 2, dim=256)
    features, weight = features.float(), weight.float()
    expected = ewth_loss(features, labels, weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = features.clone().requires_grad_()
        out = ewth_loss(x, labels, weight)
    sum(out.values()).backward()
    assert torch.isfinite(x.grad).all()
    for name in expected:
        assert out[name].dtype == torch.float32
        torch.testing.assert_close(out[name], expected[name], rtol=1e-2, atol=0)
    halved = ewth_loss(features.bfloat16(), labels, weight)
    for name in expected:
        torch.testing.assert_close(halved[name], expected[name], rtol=1e-2, atol=0)


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------
def test_pairwise_distance_values_and_gradient():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(10, 7, generator=g, dtype=torch.float64)
    x[3] = x[4]  # a coinciding pair sits at the floor
    expected = torch.cdist(x, x).clamp(min=1e-6)
    torch.testing.assert_close(pairwise_distance(x), expected)
    # large float32 norms: the matrix expansion's rounding on the diagonal is far above the floor
    big = 100 + 10 * torch.randn(16, 512, generator=g)
    assert torch.equal(pairwise_distance(big).diagonal(), torch.full((16,), 1e-6))
    y = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pairwise_distance, (y,))


def test_anchor_pair_distance_values_and_gradient():
    g = torch.Generator().manual_seed(10)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([[1, 0, 3, 2, 5, 4], [2, 2, 0, 0, 0, 1]])
    w = torch.rand(6, 5, generator=g, dtype=torch.float64)
    d, dw = anchor_pair_distance(x, index, w)
    for k in range(2):
        for i in range(6):
            diff = x[i] - x[index[k, i]]
            torch.testing.assert_close(d[k, i], diff.norm())
            torch.testing.assert_close(dw[k, i], (w[i] * diff).norm())
    assert torch.autograd.gradcheck(lambda f: anchor_pair_distance(f, index, w), (x,))
    assert torch.autograd.gradcheck(lambda f: anchor_pair_distance(f, index), (x,))


def test_hard_mining_with_unequal_identity_sizes():
    features, labels, _ = make_batch(UNEQUAL, 11, dim=16)
    dist = torch.cdist(features, features)
    mined = hard_example_mining(dist, labels)
    for i in range(len(labels)):
        pos = [j for j in range(len(labels)) if labels[j] == labels[i]]
        neg = [j for j in range(len(labels)) if labels[j] != labels[i]]
        assert mined.pos_index[i] == max(pos, key=lambda j: dist[i, j])
        assert mined.neg_index[i] == min(neg, key=lambda j: dist[i, j])
        assert bool(mined.valid[i]) == (len(pos) > 1)
    mu = mean_negative_distance(dist, mined.is_pos)
    torch.testing.assert_close(mu[0], dist[0][labels != labels[0]].mean())


def test_element_weights_by_hand():
    weight = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.05, -0.5, 0.2]])
    w = element_weights(weight, torch.tensor([0, 1]), torch.tensor([1, 0]), threshold=0.1)
    # δ = (1, .05, .5, .2), max 1: δ̂ below 0.1 -> 0, others 1 + δ̂ (symmetric for the other anchor)
    expected = torch.tensor([[2.0, 0.0, 1.5, 1.2], [2.0, 0.0, 1.5, 1.2]])
    torch.testing.assert_close(w, expected)


def test_variants_and_returned_terms():
    assert EWTH_VARIANTS == ("TH", "TH_FN", "HTH", "HNTH", "EWTH", "NEWTH", "HEWTH", "HNEWTH")
    features, labels, weight = make_batch(PK, 4, dim=32)
    for variant in EWTH_VARIANTS:
        norm = "l2" if variant == "TH_FN" else "none"
        names = set(ewth_loss(features, labels, weight, variant=variant, norm_feat=norm))
        half, mean_neg, ew = VARIANT_TERMS[variant]
        expected = {"loss_triplet"} | ({"loss_mean_neg"} if mean_neg else set()) | ({"loss_ew"} if ew else set())
        assert names == expected, variant


def test_th_fn_without_normalisation_warns():
    features, labels, weight = make_batch(PK, 4, dim=32)
    with pytest.warns(UserWarning, match="NORM_FEAT"):
        ewth_loss(features, labels, weight, variant="TH_FN")


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------
def small():
    return torch.randn(8, 16), torch.arange(4).repeat(2), torch.randn(4, 16)


def test_unknown_variant_names_valid_ones():
    f, y, w = small()
    with pytest.raises(ValueError, match="'HNEWHT'.*TH, TH_FN, HTH, HNTH, EWTH, NEWTH, HEWTH, HNEWTH"):
        ewth_loss(f, y, w, variant="HNEWHT")


def test_unknown_norm_feat_names_valid_ones():
    f, y, w = small()
    with pytest.raises(ValueError, match="'L2'.*'none', 'l2', 'max'"):
        ewth_loss(f, y, w, norm_feat="L2")
    with pytest.raises(ValueError, match="True"):
        ewth_loss(f, y, w, norm_feat=True)


def test_length_mismatch_names_shapes():
    f, y, w = small()
    with pytest.raises(ValueError, match=r"\(8, 16\).*\(7,\)"):
        ewth_loss(f, y[:7], w)


def test_classifier_width_mismatch_names_shapes():
    f, y, _ = small()
    with pytest.raises(ValueError, match=r"\(4, 15\).*\(8, 16\)"):
        ewth_loss(f, y, torch.randn(4, 15))


@pytest.mark.parametrize("bad", [-1, 4])
def test_labels_outside_classifier_rows_name_them(bad):
    f, y, w = small()
    y = y.clone()
    y[3] = bad
    with pytest.raises(ValueError, match=rf"\(4, 16\).*{bad}"):
        ewth_loss(f, y, w)


def test_other_bad_inputs():
    f, y, w = small()
    with pytest.raises(ValueError, match="classifier weight"):
        ewth_loss(f, y, None, variant="EWTH")
    ewth_loss(f, y, None, variant="HNTH")  # no EW term: no classifier needed
    with pytest.raises(ValueError, match="integer labels"):
        ewth_loss(f, y.float(), w)
    with pytest.raises(ValueError, match="N×D"):
        ewth_loss(f[0], y, w)
    with pytest.raises(ValueError, match="ew_threshold"):
        ewth_loss(f, y, w, ew_threshold=1.5)
    with pytest.raises(ValueError, match="margin"):
        ewth_loss(f, y, w, margin=float("nan"))


# ------------------------------------------------------------------------------------------------
# Options: one table, the same answers from the function and the module
# ------------------------------------------------------------------------------------------------
OPTION = {option.name: option for option in EWTH_OPTIONS}

BAD_OPTIONS = [
    ("variant", "HNEWHT"), ("variant", "hnewth"), ("variant", None), ("variant", 1),
    ("margin", float("nan")), ("margin", float("inf")), ("margin", "0.3"), ("margin", True), ("margin", None),
    ("mean_neg_margin", -0.1), ("mean_neg_margin", float("nan")), ("mean_neg_margin", "0.3"),
    ("mean_neg_margin", False),
    ("ew_margin", -0.2), ("ew_margin", -1), ("ew_margin", float("-inf")), ("ew_margin", None),
    ("ew_threshold", 1.0), ("ew_threshold", 1.5), ("ew_threshold", -0.1), ("ew_threshold", float("nan")),
    ("ew_threshold", True),
    ("norm_feat", "L2"), ("norm_feat", True), ("norm_feat", None),
    ("scale", -1.0), ("scale", float("inf")), ("scale", float("nan")), ("scale", "1"),
]

GOOD_OPTIONS = [
    {},
    {"margin": 0.0, "mean_neg_margin": -1.0, "ew_margin": -5},  # soft margin: the hinge margins are unused
    {"margin": -1.0, "ew_margin": -0.2},
    {"margin": 1, "mean_neg_margin": 0, "ew_margin": 2},  # ints are numbers
    {"ew_threshold": 0.0}, {"ew_threshold": 0.99},
    {"scale": 0.0}, {"scale": 2},
    {"variant": "TH_FN", "norm_feat": "l2"}, {"variant": "HTH", "norm_feat": "max"},
    {"variant": "EWTH", "ew_margin": 0.2}, {"variant": "HNTH", "mean_neg_margin": 0.1},
]


def _refusal(call):
    with pytest.raises(ValueError) as error:
        call()
    return str(error.value)


@pytest.mark.parametrize("name, value", BAD_OPTIONS, ids=[f"{n}={v!r}" for n, v in BAD_OPTIONS])
def test_function_and_module_refuse_the_same_options_with_the_same_message(name, value):
    f, y, w = small()
    from_function = _refusal(lambda: ewth_loss(f, y, w, **{name: value}))
    from_module = _refusal(lambda: EWTHLoss(**{name: value}))
    assert from_function == from_module
    option = OPTION[name]
    # the value, the config key, the python argument, the valid range and a fix
    assert f"MODEL.LOSSES.EWTH.{option.key} is {value!r}" in from_function
    assert f"{name}={value!r}" in from_function
    assert option.allowed in from_function and option.fix in from_function


def test_negative_hinge_margin_message_names_the_soft_margin_way_out():
    message = _refusal(lambda: EWTHLoss(ew_margin=-0.2))
    assert "MODEL.LOSSES.EWTH.EW_MARGIN is -0.2" in message and "margin >= 0" in message and "MARGIN 0" in message


@pytest.mark.filterwarnings("ignore:variant 'TH_FN'")
@pytest.mark.parametrize("options", GOOD_OPTIONS, ids=[repr(o) for o in GOOD_OPTIONS])
def test_function_and_module_accept_the_same_options_and_agree(options):
    features, labels, weight = make_batch([4, 4, 3, 2, 1], seed=21, dim=32)
    x, z = features.clone().requires_grad_(), features.clone().requires_grad_()
    from_function = ewth_loss(x, labels, weight, **options)
    module = EWTHLoss(**options)
    from_module = module(z, labels, weight)
    assert list(from_function) == list(from_module)
    for name in from_function:
        assert torch.equal(from_function[name], from_module[name]), name
    sum(from_function.values()).backward()
    sum(from_module.values()).backward()
    assert torch.equal(x.grad, z.grad)
    assert set(module.options) == set(EWTH_DEFAULTS)
    for name, value in options.items():
        assert module.options[name] == value


def test_unknown_option_is_refused_alike():
    f, y, w = small()
    with pytest.raises(TypeError) as from_function:
        ewth_loss(f, y, w, margn=0.3)
    with pytest.raises(TypeError) as from_module:
        EWTHLoss(margn=0.3)
    assert str(from_function.value) == str(from_module.value)
    assert "'margn'" in str(from_function.value) and "margin" in str(from_function.value)


def test_defaults_are_the_papers_and_are_what_the_function_and_module_use():
    paper = {"variant": "HNEWTH", "margin": 0.3, "mean_neg_margin": 0.3, "ew_margin": 0.3, "ew_threshold": 0.1,
             "norm_feat": "none", "scale": 1.0}
    assert dict(EWTH_DEFAULTS) == paper
    assert [o.default for o in EWTH_OPTIONS] == list(paper.values())
    assert EWTHLoss().options == paper
    features, labels, weight = make_batch(PK, 4, dim=32)
    implicit = ewth_loss(features, labels, weight)
    explicit = ewth_loss(features, labels, weight, **paper)
    other = ewth_loss(features, labels, weight, **dict(paper, ew_margin=0.5))
    assert list(implicit) == ["loss_triplet", "loss_mean_neg", "loss_ew"]  # HNEWTH's terms
    assert all(torch.equal(implicit[k], explicit[k]) for k in implicit)
    assert not torch.equal(implicit["loss_ew"], other["loss_ew"])  # the comparison can fail


def test_scale_multiplies_every_term_and_its_gradient():
    features, labels, weight = make_batch(PK, 5, dim=32)
    x, z = features.clone().requires_grad_(), features.clone().requires_grad_()
    plain = ewth_loss(x, labels, weight, variant="NEWTH")
    halved = ewth_loss(z, labels, weight, variant="NEWTH", scale=0.5)
    for name in plain:
        assert torch.equal(halved[name], plain[name] * 0.5)
    sum(plain.values()).backward()
    sum(halved.values()).backward()
    assert torch.equal(z.grad, x.grad * 0.5)


# ------------------------------------------------------------------------------------------------
# Diagnostics from the loss's own mining
# ------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:variant 'TH_FN'")
@pytest.mark.parametrize("variant", EWTH_VARIANTS)
def test_diagnostics_leave_the_loss_and_its_gradient_untouched(variant):
    features, labels, weight = make_batch(UNEQUAL, 6, dim=64)
    x, z = features.clone().requires_grad_(), features.clone().requires_grad_()
    plain = ewth_loss(x, labels, weight, variant=variant, margin=0.3, norm_feat="l2")
    terms, diagnostics = ewth_loss(z, labels, weight, variant=variant, margin=0.3, norm_feat="l2", diagnostics=True)
    assert list(plain) == list(terms) and all(torch.equal(plain[k], terms[k]) for k in plain)
    sum(plain.values()).backward()
    sum(terms.values()).backward()
    assert torch.equal(x.grad, z.grad)
    expected = ["hinge_active", "d_ap", "d_an"] + (["ew_kept"] if "EW" in variant else [])
    assert list(diagnostics) == expected
    assert all(v.dim() == 0 and not v.requires_grad and v.dtype == features.dtype for v in diagnostics.values())


@pytest.mark.parametrize("margin", [0.3, 0.0])
def test_diagnostics_mean_distances_match_cdist_mining(margin):
    # d_ap / d_an from an N×N cdist and masks, over the 62 anchors that form a triplet
    features, labels, weight = make_batch(UNEQUAL, 1, dim=64)
    _, diagnostics = ewth_loss(features, labels, weight, variant="HNEWTH", margin=margin, diagnostics=True)
    dist = torch.cdist(features, features)
    same = labels[:, None] == labels[None, :]
    qualifies = same.sum(1) > 1
    d_ap = dist.masked_fill(~same, -1).amax(1)[qualifies]
    d_an = dist.masked_fill(same, math.inf).amin(1)[qualifies]
    torch.testing.assert_close(diagnostics["d_ap"], d_ap.mean(), **TOL)
    torch.testing.assert_close(diagnostics["d_an"], d_an.mean(), **TOL)
    opened = (d_ap - d_an + margin > 0) if margin > 0 else (d_ap > d_an)
    torch.testing.assert_close(diagnostics["hinge_active"], opened.double().mean(), **TOL)
    assert 0 < float(diagnostics["hinge_active"]) < 1  # both kinds of anchor present: not vacuous
    values = diagnostic_values(diagnostics)
    assert list(values) == list(diagnostics) and all(isinstance(v, float) for v in values.values())
    assert values["d_ap"] == pytest.approx(float(d_ap.mean()), rel=1e-6)


@pytest.mark.parametrize("labels", [torch.arange(8), torch.zeros(8, dtype=torch.long), torch.zeros(0, dtype=torch.long)],
                         ids=["all-singletons", "one-identity", "empty"])
def test_diagnostics_without_triplets_are_nan_and_not_logged(labels):
    x = torch.randn(len(labels), 16, requires_grad=True)
    terms, diagnostics = ewth_loss(x, labels, torch.randn(8, 16), variant="EWTH", diagnostics=True)
    assert list(diagnostics) == ["hinge_active", "d_ap", "d_an", "ew_kept"]
    assert all(math.isnan(float(v)) for v in diagnostics.values())
    assert diagnostic_values(diagnostics) == {}
    assert all(float(v.detach()) == 0.0 for v in terms.values())


def test_module_forward_returns_the_same_diagnostics():
    features, labels, weight = make_batch(PK, 8, dim=32)
    module = EWTHLoss(variant="HEWTH", margin=0.2, ew_threshold=0.3, scale=2.0)
    terms, diagnostics = module(features, labels, weight, diagnostics=True)
    expected_terms, expected = ewth_loss(features, labels, weight, diagnostics=True, **module.options)
    assert all(torch.equal(terms[k], expected_terms[k]) for k in terms)
    assert all(torch.equal(diagnostics[k], expected[k]) for k in expected)


# ------------------------------------------------------------------------------------------------
# Autocast query on torch versions without a device argument
# ------------------------------------------------------------------------------------------------
def _old_torch(monkeypatch, cuda=False, cpu=None):
    """torch < 2.4: ``is_autocast_enabled()`` takes no argument and answers for CUDA only."""
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda: cuda)
    if cpu is not None:
        monkeypatch.setattr(torch, "is_autocast_cpu_enabled", lambda: cpu)


@pytest.mark.parametrize("cuda, cpu", [(False, True), (True, False), (False, False)])
def test_autocast_helper_works_without_a_device_argument(monkeypatch, cuda, cpu):
    _old_torch(monkeypatch, cuda=cuda, cpu=cpu)
    with pytest.raises(TypeError):
        torch.is_autocast_enabled("cpu")  # the old signature really is in place
    assert autocast_enabled("cpu") is cpu
    assert autocast_enabled("cuda") is cuda


def test_loss_and_diagnostics_run_on_the_old_autocast_query(monkeypatch):
    features, labels, weight = make_batch(PK, 2, dim=64)
    expected, expected_diag = ewth_loss(features, labels, weight, diagnostics=True)
    _old_torch(monkeypatch, cuda=False, cpu=False)
    terms, diagnostics = ewth_loss(features, labels, weight, diagnostics=True)  # no TypeError on the old query
    assert all(torch.equal(terms[k], expected[k]) for k in expected)
    assert all(torch.equal(diagnostics[k], expected_diag[k]) for k in expected_diag)
    # with autocast on (as the old CPU query reports it), the loss steps out of it
    assert isinstance(autocast_disabled("cuda"), contextlib.nullcontext)
    _old_torch(monkeypatch, cuda=True, cpu=True)
    assert isinstance(autocast_disabled("cpu"), torch.autocast)


def test_only_the_helper_asks_torch_about_autocast():
    import pathlib

    import fastreid_ewth.losses as losses

    folder = pathlib.Path(losses.__file__).parent
    callers = sorted(p.name for p in folder.glob("*.py") if "torch.is_autocast" in p.read_text())
    assert callers == ["autocast.py"]
