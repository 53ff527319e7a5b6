"""fastreid_ewth.evaluation against fastreid's own Python evaluation code.

References: ``fastreid.evaluation.rank.eval_market1501`` (the Python path of ``evaluate_rank``),
``fastreid.utils.compute_dist.build_dist``, ``fastreid.evaluation.roc.evaluate_roc_py`` and
``fastreid.evaluation.reid_evaluation.ReidEvaluator`` (which, with fastreid_ewth's compat patch, never
compiles and so runs its Python path), plus a slow per-query computation written here from the protocol's
definition.

Results are compared bit for bit (``assert_equal_rank``): same positions, same float64 AP/INP rounding
(numpy's pairwise summation), same float32 cmc, and ties between correct and wrong matches ordered by
fastreid's own ``np.argsort``.
"""
import importlib.util
import pathlib
import sys
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch

import fastreid_ewth  # noqa: F401  (compat patches before fastreid imports)
from fastreid.config import get_cfg
from fastreid.evaluation import reid_evaluation
from fastreid.evaluation.rank import eval_market1501
from fastreid.utils import compute_dist
from fastreid.utils.compute_dist import build_dist

from fastreid_ewth.evaluation import (
    ExactReidEvaluator,
    UnsupportedProtocolError,
    evaluate_features,
    evaluate_rank,
    rank_features,
    roc_scores,
)
from fastreid_ewth.evaluation import rank as rank_module
from fastreid_ewth.evaluation.distance import DistanceBlocks, iter_distance_blocks
from fastreid_ewth.evaluation.rank import GalleryRanker, numpy_sum_of_sparse
from fastreid_ewth.config import add_ewth_config

warnings.filterwarnings("ignore", message=".*addmm_.*")  # fastreid's euclidean uses a deprecated overload


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def random_case(rng, num_q, num_g, num_ids, num_cams, kind):
    """Labels with repeated identities and cameras (same-camera matches, queries without any match)."""
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = rng.integers(0, num_ids + 3, num_g)  # ids >= num_ids: gallery-only, never matched
    q_cams = rng.integers(0, num_cams, num_q)
    g_cams = rng.integers(0, num_cams, num_g)
    if num_q >= 2 and num_g >= 2:
        q_pids[0] = num_ids + 100  # identity absent from the gallery
        q_pids[1], g_pids[:2], g_cams[:2] = num_ids + 101, num_ids + 101, q_cams[1]  # only same-camera matches
    if kind == "float32":
        dist = rng.random((num_q, num_g), dtype=np.float32)
    elif kind == "float64":
        dist = rng.standard_normal((num_q, num_g))
    elif kind == "int-ties":
        dist = rng.integers(0, 4, (num_q, num_g)).astype(np.float32)
    elif kind == "int64-ties":
        dist = rng.integers(-3, 3, (num_q, num_g))
    else:
        raise AssertionError(kind)
    return dist, q_pids, g_pids, q_cams, g_cams


def slow_reference(dist, q_pids, g_pids, q_cams, g_cams, max_rank, sort_kind="quicksort"):
    """Per-query loop straight from the protocol's definition; the tie order is that of ``sort_kind``
    (``"pessimistic"``: at equal distances, entries of other identities first).

    Each query's CMC is cut at ``max_rank`` and continued at 1 past the end of a short kept gallery.
    """
    cmcs, aps, inps = [], [], []
    max_rank = min(max_rank, dist.shape[1])
    for i in range(dist.shape[0]):
        if sort_kind == "pessimistic":
            order = np.lexsort((g_pids == q_pids[i], dist[i]))
        else:
            order = np.argsort(dist[i], kind=sort_kind)
        keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        hits = (g_pids[order][keep] == q_pids[i])
        if not hits.any():
            continue
        positions = [k + 1 for k, h in enumerate(hits) if h]
        aps.append(sum((n + 1) / p for n, p in enumerate(positions)) / len(positions))
        inps.append(len(positions) / positions[-1])
        cmcs.append([1.0 if r + 1 >= positions[0] else 0.0 for r in range(max_rank)])
    return np.mean(cmcs, axis=0), np.array(aps), np.array(inps)


def assert_equal_rank(ours, ref):
    """cmc, AP and INP are the same arrays, bit for bit (cmc float32, AP/INP float64)."""
    cmc, ap, inp = ours
    cmc_ref, ap_ref, inp_ref = (np.asarray(x) for x in ref)
    assert cmc.dtype == np.float32 and ap.dtype == np.float64 and inp.dtype == np.float64
    assert cmc.shape == cmc_ref.shape and ap.shape == ap_ref.shape and inp.shape == inp_ref.shape
    np.testing.assert_array_equal(cmc, cmc_ref.astype(np.float32))
    np.testing.assert_array_equal(ap, ap_ref)
    np.testing.assert_array_equal(inp, inp_ref)


def fastreid_rowwise(dist, q_pids, g_pids, q_cams, g_cams, max_rank):
    """fastreid's eval_market1501 one query at a time: its exact AP/INP also where the kept galleries have
    different lengths (which its whole-matrix call cannot stack); cmc as ours defines it there."""
    curves, aps, inps = [], [], []
    for i in range(dist.shape[0]):
        kept = np.sum(~((g_pids == q_pids[i]) & (g_cams == q_cams[i])))
        if not np.any((g_pids == q_pids[i]) & (g_cams != q_cams[i])):
            continue
        cmc, ap, inp = eval_market1501(dist[i:i + 1], q_pids[i:i + 1], g_pids, q_cams[i:i + 1], g_cams,
                                       min(max_rank, kept))
        curves.append(cmc)
        aps += ap
        inps += inp
    length = min(max_rank, dist.shape[1], max(c.size for c in curves))
    curves = np.array([np.concatenate([c, np.ones(max(0, length - c.size), np.float32)])[:length] for c in curves])
    return curves.sum(0).astype(np.float32) / np.float32(len(curves)), np.array(aps), np.array(inps)


def assert_same_rank(ours, ref, tol=1e-6):
    """cmc, AP and INP agree (AP/INP to ``tol``, the float32 cmc to at least 1e-6)."""
    cmc, ap, inp = ours
    cmc_ref, ap_ref, inp_ref = ref
    assert cmc.shape == np.asarray(cmc_ref).shape
    np.testing.assert_allclose(cmc, cmc_ref, rtol=0, atol=max(tol, 1e-6))  # cmc is float32
    np.testing.assert_allclose(ap, ap_ref, rtol=0, atol=tol)
    np.testing.assert_allclose(inp, inp_ref, rtol=0, atol=tol)


# --------------------------------------------------------------------------------------------------
# evaluate_rank
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["float32", "float64", "int-ties", "int64-ties"])
@pytest.mark.parametrize("seed", range(6))
def test_rank_equals_fastreid_python(kind, seed):
    rng = np.random.default_rng(seed)
    # a gallery of >= 70 keeps every kept gallery >= max_rank (fastreid fails on ragged curves)
    num_q, num_g = int(rng.integers(20, 60)), int(rng.integers(70, 400))
    dist, q_pids, g_pids, q_cams, g_cams = random_case(rng, num_q, num_g, int(rng.integers(3, 25)), 3, kind)
    max_rank = int(rng.choice([1, 5, 20]))
    ref = eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, max_rank)
    ours = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank, block_size=int(rng.integers(1, 30)))
    assert_equal_rank(ours, ref)
    # the cases must exercise what they claim to
    assert len(ref[1]) < num_q, "some query should have no valid match"
    same_cam = (q_pids[:, None] == g_pids[None, :]) & (q_cams[:, None] == g_cams[None, :])
    assert same_cam.any(), "some gallery entry should share identity and camera with its query"


def test_ties_follow_fastreid_argsort_not_a_stable_sort():
    """Integer distances: a stable sort gives other numbers, ours must give fastreid's."""
    differs = 0
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        dist, q_pids, g_pids, q_cams, g_cams = random_case(rng, 40, 200, 8, 3, "int-ties")
        ours = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 10)
        assert_equal_rank(ours, eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, 10))
        assert_same_rank(ours, slow_reference(dist, q_pids, g_pids, q_cams, g_cams, 10), tol=1e-12)
        stable = slow_reference(dist, q_pids, g_pids, q_cams, g_cams, 10, sort_kind="stable")
        differs += not np.allclose(np.mean(stable[1]), np.mean(ours[1]), rtol=0, atol=1e-9)
    assert differs > 0, "ties should matter in these cases, else this test proves nothing"


def test_pessimistic_ties_put_wrong_matches_first():
    """ties="pessimistic": a correct match ranks after every kept wrong entry at its distance; never above
    fastreid's numbers, equal to them where nothing ties."""
    differs = 0
    for seed in range(10):
        rng = np.random.default_rng(300 + seed)
        kind = "int-ties" if seed % 2 else "int64-ties"
        dist, q_pids, g_pids, q_cams, g_cams = random_case(rng, 40, 200, 8, 3, kind)
        ours = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 10, ties="pessimistic",
                             block_size=int(rng.integers(1, 50)))
        assert_same_rank(ours, slow_reference(dist, q_pids, g_pids, q_cams, g_cams, 10, "pessimistic"), tol=1e-12)
        fast = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 10)
        assert np.all(ours[1] <= fast[1]) and np.all(ours[0] <= fast[0])
        differs += not np.array_equal(ours[1], fast[1])
    assert differs > 0, "ties should matter in these cases, else this test proves nothing"
    rng = np.random.default_rng(5)
    dist, q_pids, g_pids, q_cams, g_cams = random_case(rng, 50, 300, 10, 3, "float64")  # no ties
    assert_equal_rank(evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, ties="pessimistic"),
                      eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, 50))


def test_collapsed_features_rank_worst_under_pessimistic_ties():
    """Every distance equal: each correct match comes after all wrong entries, whatever the sort does."""
    q_pids, g_pids = np.array([1, 2]), np.array([1, 1, 2, 3, 3, 3])
    q_cams, g_cams = np.array([0, 0]), np.array([1, 2, 1, 1, 1, 1])
    cmc, ap, inp = evaluate_rank(np.ones((2, 6), np.float32), q_pids, g_pids, q_cams, g_cams, 6, ties="pessimistic")
    # query 1: correct at positions 5, 6 of 6; query 2: at position 6
    np.testing.assert_allclose(ap, [(1 / 5 + 2 / 6) / 2, 1 / 6])
    np.testing.assert_allclose(inp, [2 / 6, 1 / 6])
    np.testing.assert_array_equal(cmc, np.float32([0, 0, 0, 0, 0.5, 1]))


def test_bad_ties_rule_is_refused():
    rng = np.random.default_rng(0)
    dist, q_pids, g_pids, q_cams, g_cams = random_case(rng, 5, 20, 3, 2, "float32")
    with pytest.raises(ValueError, match="TEST.TIES.*'stable'"):
        evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, ties="stable")
    with pytest.raises(ValueError, match="pessimistic"):
        rank_features(torch.randn(5, 4), torch.randn(20, 4), q_pids, g_pids, q_cams, g_cams, ties="best")


def test_rank_accepts_torch_tensors_and_large_blocked_case():
    rng = np.random.default_rng(7)
    dist, q_pids, g_pids, q_cams, g_cams = random_case(rng, 300, 3000, 200, 6, "float32")
    ref = eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, 50)
    ours = evaluate_rank(torch.from_numpy(dist), torch.from_numpy(q_pids), torch.from_numpy(g_pids),
                         torch.from_numpy(q_cams), torch.from_numpy(g_cams), use_cython=False, block_size=37)
    assert_equal_rank(ours, ref)
    assert ours[0].dtype == np.float32
    np.testing.assert_array_equal(ours[0], ref[0])  # cmc bit for bit (same float32 arithmetic)


def test_float64_near_ties_resolved_exactly():
    """float64 keys drop low bits: values one ulp apart must still rank as fastreid ranks them."""
    rng = np.random.default_rng(3)
    dist, q_pids, g_pids, q_cams, g_cams = random_case(rng, 30, 100, 6, 3, "float64")
    dist = np.round(dist, 1) + rng.integers(0, 3, dist.shape) * np.spacing(np.abs(np.round(dist, 1)) + 1)
    assert_equal_rank(evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 10),
                      eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, 10))


def test_max_rank_larger_than_gallery():
    rng = np.random.default_rng(11)
    num_g = 20
    g_pids = rng.integers(0, 5, num_g)
    g_cams = np.zeros(num_g, dtype=int)
    q_pids = rng.integers(0, 5, 15)
    q_cams = np.ones(15, dtype=int)  # no same-camera entries: every kept gallery has all 20
    dist = rng.random((15, num_g)).astype(np.float32)
    ref = eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, 50)
    ours = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 50)
    assert ours[0].shape == (num_g,)
    assert_equal_rank(ours, ref)
    assert ours[0][-1] == 1.0


def test_max_rank_larger_than_short_kept_galleries():
    """Kept galleries of different lengths, all shorter than max_rank: fastreid cannot stack the curves;
    ours has the longest kept length and continues shorter curves at 1."""
    rng = np.random.default_rng(12)
    dist, q_pids, g_pids, q_cams, g_cams = random_case(rng, 25, 30, 4, 2, "float32")
    with pytest.raises(ValueError):
        eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, 50)
    cmc, ap, inp = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 50)
    ref = slow_reference(dist, q_pids, g_pids, q_cams, g_cams, 50)
    kept = [30 - np.sum((g_pids == p) & (g_cams == c)) for p, c in zip(q_pids, q_cams)]
    assert cmc.shape == (max(kept),)
    np.testing.assert_allclose(cmc, ref[0][:cmc.size], atol=1e-6)
    np.testing.assert_allclose(ap, ref[1], atol=1e-12)
    np.testing.assert_allclose(inp, ref[2], atol=1e-12)
    assert_equal_rank((cmc, ap, inp), fastreid_rowwise(dist, q_pids, g_pids, q_cams, g_cams, 50))


def test_cuhk03_protocol_refused():
    rng = np.random.default_rng(0)
    dist, q_pids, g_pids, q_cams, g_cams = random_case(rng, 5, 10, 3, 2, "float32")
    with pytest.raises(UnsupportedProtocolError, match="CUHK03"):
        evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, use_metric_cuhk03=True)
    assert issubclass(UnsupportedProtocolError, ValueError)
    assert issubclass(UnsupportedProtocolError, NotImplementedError)


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------
def test_no_valid_query_raises():
    q_pids, g_pids = np.array([1, 2]), np.array([1, 2, 3])
    q_cams, g_cams = np.array([0, 0]), np.array([0, 0, 1])  # the only matches share the query's camera
    with pytest.raises(ValueError, match="no query has a valid match"):
        evaluate_rank(np.zeros((2, 3), np.float32), q_pids, g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="no query has a valid match"):
        evaluate_features(np.eye(2, 4), np.eye(3, 4), q_pids, g_pids, q_cams, g_cams)


@pytest.mark.parametrize("bad", ["q_pids", "g_pids", "q_camids", "g_camids"])
def test_mismatched_lengths_raise_with_shapes(bad):
    rng = np.random.default_rng(0)
    dist, *labels = random_case(rng, 6, 9, 3, 2, "float32")
    args = dict(zip(["q_pids", "g_pids", "q_camids", "g_camids"], labels))
    args[bad] = args[bad][:-1]
    with pytest.raises(ValueError, match=r"{} has shape \({},\)".format(bad, len(args[bad]))) as e:
        evaluate_rank(dist, **args)
    assert "(6, 9)" in str(e.value)
    feats_q, feats_g = rng.standard_normal((6, 4)), rng.standard_normal((9, 4))
    with pytest.raises(ValueError, match=r"{} has shape".format(bad)):
        evaluate_features(feats_q, feats_g, **args)


def test_bad_distmat_and_arguments_raise():
    rng = np.random.default_rng(0)
    dist, *labels = random_case(rng, 6, 9, 3, 2, "float32")
    with pytest.raises(ValueError, match=r"2-D.*\(54,\)"):
        evaluate_rank(dist.reshape(-1), *labels)
    nan_dist = dist.copy()
    nan_dist[[1, 4], 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN in 2 row"):
        evaluate_rank(nan_dist, *labels)
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_rank(dist, *labels, max_rank=0)
    with pytest.raises(ValueError, match="block_size"):
        evaluate_rank(dist, *labels, block_size=0)


def test_non_finite_features_raise_naming_rows():
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((9, 4)).astype(np.float32)
    _, *labels = random_case(rng, 6, 9, 3, 2, "float32")
    bad_g = g.copy()
    bad_g[3, 1] = np.nan
    bad_g[5, 0] = np.inf
    bad_g[5, 2] = -np.inf
    with pytest.raises(ValueError, match=r"gallery_feats has 2 row\(s\) \(of 9\).*first at row 3"):
        evaluate_features(q, bad_g, *labels)
    bad_q = q.copy()
    bad_q[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"query_feats has 1 row"):
        evaluate_features(torch.from_numpy(bad_q), g, *labels)
    with pytest.raises(ValueError, match=r"\(6, 4\).*\(9, 3\)"):
        evaluate_features(q, g[:, :3], *labels)
    with pytest.raises(ValueError, match="'cosine', 'euclidean'"):
        evaluate_features(q, g, *labels, metric="jaccard")


# --------------------------------------------------------------------------------------------------
# distances and evaluate_features
# --------------------------------------------------------------------------------------------------
def feature_case(seed, num_q=70, num_g=300, dim=64, num_ids=25):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_ids + 3, dim)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids + 3, num_g)
    q_cams, g_cams = rng.integers(0, 4, num_q), rng.integers(0, 4, num_g)
    q = torch.from_numpy(centers[q_pids] + rng.standard_normal((num_q, dim)).astype(np.float32))
    g = torch.from_numpy(centers[g_pids] + rng.standard_normal((num_g, dim)).astype(np.float32))
    return q, g, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("block", [1, 5, 16, 29, 1000])
def test_blocked_distances_equal_build_dist(metric, block):
    q, g = feature_case(0)[:2]
    full = build_dist(q, g, metric)
    got = np.concatenate([d.numpy().copy() for _, _, d in iter_distance_blocks(q, g, metric, block)])
    assert got.shape == full.shape
    np.testing.assert_allclose(got, full, rtol=1e-6, atol=1e-5 if metric == "euclidean" else 1e-6)
    if torch.backends.mkl.is_available():
        # products of >= MIN_BLOCK_ROWS rows round like the one-shot matrix (what MIN_BLOCK_ROWS is for)
        assert np.array_equal(got, full)
    np.testing.assert_array_equal(DistanceBlocks(g, metric)(q).numpy(), full)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", range(3))
def test_evaluate_features_equals_rank_on_full_matrix(metric, seed, monkeypatch):
    q, g, q_pids, g_pids, q_cams, g_cams = feature_case(seed)
    full = build_dist(q, g, metric)
    ref = eval_market1501(full, q_pids, g_pids, q_cams, g_cams, 50)
    calls = []
    real_products = DistanceBlocks.products
    monkeypatch.setattr(DistanceBlocks, "products", lambda self, x: calls.append(len(x)) or real_products(self, x))
    got = evaluate_features(q, g, q_pids, g_pids, q_cams, g_cams, metric=metric, block_size=5)
    assert calls == [16, 16, 16, 16, 16], "70 queries in blocks of 16 rows, the last one overlapping"
    assert_equal_rank(rank_features(q, g, q_pids, g_pids, q_cams, g_cams, metric, block_size=5), ref)
    assert set(got) == {"mAP", "mINP", "cmc", "Rank-1", "Rank-5", "Rank-10"}
    np.testing.assert_allclose(got["cmc"], ref[0], atol=1e-6)
    assert got["mAP"] == pytest.approx(np.mean(ref[1]), abs=1e-6)
    assert got["mINP"] == pytest.approx(np.mean(ref[2]), abs=1e-6)
    for r in (1, 5, 10):
        assert got["Rank-{}".format(r)] == pytest.approx(ref[0][r - 1], abs=1e-6)
    assert 0.0 < got["mAP"] < 1.0  # fractions, not percent
    # and equal to our own rank on the full matrix, numpy features in float64 too
    assert_same_rank(rank_features(q.numpy(), g.numpy(), q_pids, g_pids, q_cams, g_cams, metric, block_size=16),
                     evaluate_rank(full, q_pids, g_pids, q_cams, g_cams), tol=1e-6)


def test_evaluate_features_small_gallery():
    q, g, q_pids, g_pids, q_cams, g_cams = feature_case(4, num_q=10, num_g=8, num_ids=3)
    g_cams = np.full(8, 9)  # no same-camera removal: every kept gallery has 8 entries
    got = evaluate_features(q, g, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    ref = eval_market1501(build_dist(q, g, "cosine"), q_pids, g_pids, q_cams, g_cams, 50)
    assert got["cmc"].shape == (8,)
    np.testing.assert_allclose(got["cmc"], ref[0], atol=1e-6)
    assert got["Rank-10"] == 1.0


# --------------------------------------------------------------------------------------------------
# exact equality with fastreid: features -> (cmc, all_AP, all_INP)
# --------------------------------------------------------------------------------------------------
def fastreid_features(q, g, q_pids, g_pids, q_cams, g_cams, metric, max_rank=50):
    """fastreid's own evaluator path: build_dist, then the Python eval_market1501."""
    return eval_market1501(build_dist(q, g, metric), q_pids, g_pids, q_cams, g_cams, max_rank)


def labels_case(rng, num_q, num_g, num_ids, num_cams):
    """Labels with junk (same identity and camera), queries without a valid match and gallery-only ids."""
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = rng.integers(0, num_ids + 2, num_g)
    q_cams = rng.integers(0, num_cams, num_q)
    g_cams = rng.integers(0, num_cams, num_g)
    q_pids[0] = num_ids + 100  # identity absent from the gallery
    q_pids[1], g_pids[:2], g_cams[:2] = num_ids + 101, num_ids + 101, q_cams[1]  # only junk
    return q_pids, g_pids, q_cams, g_cams


def correct_wrong_ties(dist, q_pids, g_pids, q_cams, g_cams):
    """Number of queries with a kept wrong entry at exactly the distance of one of their correct matches."""
    count = 0
    for i in range(dist.shape[0]):
        correct = (g_pids == q_pids[i]) & (g_cams != q_cams[i])
        count += bool(np.isin(dist[i, g_pids != q_pids[i]], dist[i, correct]).any())
    return count


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", range(3))
def test_random_features_equal_fastreid_exactly(metric, seed):
    """torch.randn features, as the benchmark's worst case: correct matches anywhere in the ranking."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    num_q, num_g = 120, 2500
    q_pids, g_pids, q_cams, g_cams = labels_case(rng, num_q, num_g, 40, 4)
    q, g = torch.randn(num_q, 48, generator=gen), torch.randn(num_g, 48, generator=gen)
    ref = fastreid_features(q, g, q_pids, g_pids, q_cams, g_cams, metric)
    assert_equal_rank(rank_features(q, g, q_pids, g_pids, q_cams, g_cams, metric, block_size=23), ref)
    assert_equal_rank(rank_features(q, g, q_pids, g_pids, q_cams, g_cams, metric), ref)  # one block
    assert len(ref[1]) < num_q


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_overlapped_or_sequential_ranking_equal_fastreid(overlap, threads, monkeypatch):
    """Ranking block k while block k + 1's product runs (two product buffers) or one after the other."""
    from fastreid_ewth.evaluation import features as features_module

    monkeypatch.setattr(features_module, "OVERLAP", overlap)
    rng = np.random.default_rng(12)
    gen = torch.Generator().manual_seed(12)
    q_pids, g_pids, q_cams, g_cams = labels_case(rng, 100, 900, 30, 4)
    q, g = torch.randn(100, 32, generator=gen), torch.randn(900, 32, generator=gen)
    ref = fastreid_features(q, g, q_pids, g_pids, q_cams, g_cams, "cosine")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = rank_features(q, g, q_pids, g_pids, q_cams, g_cams, "cosine", block_size=17)
    finally:
        torch.set_num_threads(old)
    assert_equal_rank(got, ref)


def test_many_matches_per_row_equal_fastreid_exactly():
    rng = np.random.default_rng(5)
    gen = torch.Generator().manual_seed(5)
    q_pids, g_pids, q_cams, g_cams = labels_case(rng, 60, 1500, 3, 3)
    q, g = torch.randn(60, 16, generator=gen), torch.randn(1500, 16, generator=gen)
    assert np.mean([np.sum((g_pids == p) & (g_cams != c)) for p, c in zip(q_pids, q_cams)]) > 150
    for metric in ("cosine", "euclidean"):
        ref = fastreid_features(q, g, q_pids, g_pids, q_cams, g_cams, metric)
        assert_equal_rank(rank_features(q, g, q_pids, g_pids, q_cams, g_cams, metric, block_size=17), ref)
        assert_equal_rank(evaluate_rank(build_dist(q, g, metric), q_pids, g_pids, q_cams, g_cams, block_size=7), ref)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("kind", ["integer", "duplicated", "all-equal"])
def test_tied_distances_follow_fastreid_argsort(metric, kind):
    """Distances where correct and wrong matches tie exactly: integer-valued features, a gallery with
    duplicated rows of other identities, a gallery whose rows are all the same vector."""
    rng = np.random.default_rng(9)
    num_q, num_g = 80, 400
    q_pids, g_pids, q_cams, g_cams = labels_case(rng, num_q, num_g, 12, 3)
    q = torch.from_numpy(rng.integers(0, 3, (num_q, 6)).astype(np.float32))
    if kind == "integer":
        g = torch.from_numpy(rng.integers(0, 3, (num_g, 6)).astype(np.float32))
    elif kind == "duplicated":
        base = torch.randn(num_g // 4, 6, generator=torch.Generator().manual_seed(1))
        g = base[torch.from_numpy(rng.integers(0, num_g // 4, num_g))]  # ~4 copies of each, any identity
    else:
        g = torch.randn(1, 6, generator=torch.Generator().manual_seed(2)).expand(num_g, 6).contiguous()
    dist = build_dist(q, g, metric)
    assert correct_wrong_ties(dist, q_pids, g_pids, q_cams, g_cams) > num_q // 4, "the case must have ties"
    ref = eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, 50)
    stable = slow_reference(dist, q_pids, g_pids, q_cams, g_cams, 50, sort_kind="stable")
    assert not np.array_equal(stable[1], ref[1]), "a stable sort orders the ties differently"
    for block in (None, 16, 33):
        assert_equal_rank(rank_features(q, g, q_pids, g_pids, q_cams, g_cams, metric, block_size=block), ref)
    assert_equal_rank(evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, block_size=9), ref)
    # the pessimistic rule: the same from features as from the whole matrix, and as the slow loop
    pess = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, block_size=9, ties="pessimistic")
    assert_same_rank(pess, slow_reference(dist, q_pids, g_pids, q_cams, g_cams, 50, "pessimistic"), tol=1e-12)
    for block in (None, 16):
        assert_equal_rank(rank_features(q, g, q_pids, g_pids, q_cams, g_cams, metric, block_size=block,
                                        ties="pessimistic"), pess)


@pytest.mark.parametrize("num_g", [1, 2, 3, 5, 9])
def test_tiny_galleries_equal_fastreid_exactly(num_g):
    rng = np.random.default_rng(num_g)
    num_q = 20
    q_pids, g_pids = rng.integers(0, 2, num_q), rng.integers(0, 2, num_g)
    q_cams, g_cams = rng.integers(0, 2, num_q), rng.integers(0, 2, num_g)
    q, g = torch.randn(num_q, 4), torch.randn(num_g, 4)
    if not np.any((q_pids[:, None] == g_pids[None]) & (q_cams[:, None] != g_cams[None])):
        g_pids[0], g_cams[0] = q_pids[0], 1 - q_cams[0]
    for metric in ("cosine", "euclidean"):
        dist = build_dist(q, g, metric)
        ref = fastreid_rowwise(dist, q_pids, g_pids, q_cams, g_cams, 50)
        assert_equal_rank(rank_features(q, g, q_pids, g_pids, q_cams, g_cams, metric), ref)
        assert_equal_rank(evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, block_size=3), ref)
    # without junk every kept gallery has num_g entries and fastreid's whole-matrix call works too
    g_cams = np.full(num_g, 7)
    ref = fastreid_features(q, g, q_pids, g_pids, q_cams, g_cams, "cosine")
    assert_equal_rank(rank_features(q, g, q_pids, g_pids, q_cams, g_cams), ref)


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int8, np.uint8, np.int64, np.uint64, np.bool_])
def test_rank_dtypes_equal_fastreid_exactly(dtype):
    rng = np.random.default_rng(4)
    q_pids, g_pids, q_cams, g_cams = labels_case(rng, 40, 300, 8, 3)
    if dtype == np.bool_:
        dist = rng.random((40, 300)) < 0.5
    elif dtype == np.uint64:
        dist = rng.integers(0, 4, (40, 300)).astype(np.uint64) * np.uint64(1 << 62) + np.uint64(3)
    elif np.issubdtype(dtype, np.integer):
        dist = rng.integers(0, 5, (40, 300)).astype(dtype)
    else:
        dist = np.round(rng.random((40, 300)), 2).astype(dtype)
    assert_equal_rank(evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, block_size=11),
                      eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, 50))


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("mode", ["sort", "near", "direct"])
@pytest.mark.parametrize("threads", [1, 3])
def test_ranker_modes_agree(mode, threads, dtype, monkeypatch):
    """Whole-row value sort, sort of the near entries only, or argsort right away; one thread or several:
    the same numbers."""
    monkeypatch.setattr(rank_module, "DIRECT_ARGSORT_TIE_RATE", -1.0 if mode == "direct" else 2.0)
    monkeypatch.setattr(rank_module, "NEAR_SORT_RATE", 2.0 if mode == "near" else -1.0)
    rng = np.random.default_rng(6)
    q_pids, g_pids, q_cams, g_cams = labels_case(rng, 90, 700, 10, 3)
    dist = rng.integers(0, 60000, (90, 700)).astype(dtype)
    ranker = GalleryRanker(g_pids, g_cams, num_threads=threads)
    stats = [ranker.rank_block(dist[s:s + 30], q_pids[s:s + 30], q_cams[s:s + 30]) for s in (0, 30, 60)]
    assert 0 < ranker.rows_tied < ranker.rows_ranked
    valid = np.concatenate([st["valid"] for st in stats])
    cmc, ap, inp = eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, 50)
    np.testing.assert_array_equal(np.concatenate([st["ap"] for st in stats])[valid], ap)
    np.testing.assert_array_equal(np.concatenate([st["inp"] for st in stats])[valid], inp)
    if dtype == np.float32:
        # the similarity form (cosine: distances are 1 - values) gives the same as the distances
        sim = (1 - dist).astype(np.float32)
        again = GalleryRanker(g_pids, g_cams, num_threads=threads).rank_block(sim, q_pids, q_cams, offset=1)
        np.testing.assert_array_equal(again["ap"][valid], ap)
        np.testing.assert_array_equal(again["first_hit"], np.concatenate([st["first_hit"] for st in stats]))


@pytest.mark.parametrize("mode", ["sort", "near", "direct"])
def test_signed_zero_ties(mode, monkeypatch):
    """-0.0 and +0.0 are equal distances (a tie) though their bit patterns differ."""
    monkeypatch.setattr(rank_module, "DIRECT_ARGSORT_TIE_RATE", -1.0 if mode == "direct" else 2.0)
    monkeypatch.setattr(rank_module, "NEAR_SORT_RATE", 2.0 if mode == "near" else -1.0)
    rng = np.random.default_rng(8)
    q_pids, g_pids, q_cams, g_cams = labels_case(rng, 40, 200, 5, 3)
    # correct matches at +0.0, some wrong entries at -0.0: only the value comparison sees the ties
    correct = g_pids[None, :] == q_pids[:, None]
    dist = np.where(correct, np.float32(0.0), np.where(rng.random((40, 200)) < 0.3, np.float32(-0.0), 1.0))
    dist = dist.astype(np.float32)
    assert correct_wrong_ties(dist, q_pids, g_pids, q_cams, g_cams) > 10
    assert_equal_rank(evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams),
                      eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, 50))


def test_numpy_sum_of_sparse_is_np_sum():
    """numpy's pairwise float64 summation reproduced from the nonzero terms alone, bit for bit."""
    rng = np.random.default_rng(0)
    lengths = np.concatenate([np.arange(1, 300), rng.integers(300, 5000, 100), rng.integers(5000, 90000, 30)])
    seg, index, values, dense = [], [], [], []
    for s, n in enumerate(lengths):
        k = int(rng.integers(0, min(n, 60) + 1))
        pos = np.sort(rng.choice(n, size=k, replace=False))
        v = (np.arange(k) + 1) / (pos + 1.0) if s % 2 else rng.random(k) * 10.0 ** rng.integers(-6, 6)
        a = np.zeros(n)
        a[pos] = v
        seg.append(np.full(k, s))
        index.append(pos)
        values.append(v)
        dense.append(a.sum())
    seg, index, values = np.concatenate(seg), np.concatenate(index), np.concatenate(values)
    ours = numpy_sum_of_sparse(seg, index, values, lengths)
    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
        np.testing.assert_array_equal(ours, np.array(dense))
    else:  # numpy 1.x rounds some long sums otherwise (last bit); the emulation follows numpy 2's algorithm
        np.testing.assert_allclose(ours, np.array(dense), rtol=1e-15, atol=0)
    naive = np.bincount(seg, weights=values, minlength=lengths.size)
    assert not np.array_equal(naive, dense), "a plain running sum rounds differently (else this proves nothing)"
    assert numpy_sum_of_sparse([], [], [], [3, 4]).tolist() == [0.0, 0.0]


def test_nan_distances_from_features_raise():
    rng = np.random.default_rng(0)
    q_pids, g_pids, q_cams, g_cams = labels_case(rng, 20, 50, 4, 3)
    q, g = torch.randn(20, 4), torch.randn(50, 4)
    q[:] = 1e20
    g[3] = 1e20  # finite, but the squared norms and the product overflow float32: inf - inf
    with pytest.raises(ValueError, match=r"NaN in \d+ row\(s\)"):
        rank_features(q, g, q_pids, g_pids, q_cams, g_cams, "euclidean")


# --------------------------------------------------------------------------------------------------
# ROC
# --------------------------------------------------------------------------------------------------
def test_roc_scores_same_pairs_as_fastreid():
    from fastreid.evaluation.roc import evaluate_roc_py

    rng = np.random.default_rng(5)
    dist, q_pids, g_pids, q_cams, g_cams = random_case(rng, 30, 80, 6, 3, "float32")
    scores, labels = roc_scores(dist, q_pids, g_pids, q_cams, g_cams)
    ref_scores, ref_labels = evaluate_roc_py(dist, q_pids, g_pids, q_cams, g_cams)
    ours = sorted(zip(scores.tolist(), labels.tolist()))
    theirs = sorted(zip(np.asarray(ref_scores).tolist(), np.asarray(ref_labels).tolist()))
    assert ours == theirs


# --------------------------------------------------------------------------------------------------
# the evaluator, end to end against fastreid's ReidEvaluator (Python path)
# --------------------------------------------------------------------------------------------------
def make_batches(seed=0, num_q=60, num_g=300, dim=32, num_ids=30, batch=64):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_ids, dim)).astype(np.float32)
    pids = np.concatenate([rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)])
    cams = rng.integers(0, 4, num_q + num_g)
    feats = torch.from_numpy(centers[pids] + rng.standard_normal((num_q + num_g, dim)).astype(np.float32))
    return num_q, [({"targets": torch.from_numpy(pids[s:s + batch]), "camids": torch.from_numpy(cams[s:s + batch])},
                    feats[s:s + batch]) for s in range(0, num_q + num_g, batch)]


def run_evaluator(cls, cfg, num_q, batches):
    ev = cls(cfg, num_q)
    ev.reset()
    for inputs, outputs in batches:
        ev.process(inputs, outputs)
    return ev.evaluate()


@pytest.fixture
def cpu_jaccard(monkeypatch):
    """fastreid's build_dist asks faiss for a GPU search; let the reference use faiss's exact CPU search."""
    real = compute_dist.compute_jaccard_distance
    monkeypatch.setattr(compute_dist, "compute_jaccard_distance",
                        lambda feat, k1=20, k2=6, search_option=0, fp16=False: real(feat, k1, k2, 3, fp16))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("option", [None, "AQE", "RERANK", "ROC"])
def test_evaluator_matches_reid_evaluator(metric, option, cpu_jaccard):
    cfg = get_cfg()
    cfg.TEST.METRIC = metric
    if option:
        cfg.TEST[option].ENABLED = True
    num_q, batches = make_batches()
    ref = run_evaluator(reid_evaluation.ReidEvaluator, cfg, num_q, batches)
    got = run_evaluator(ExactReidEvaluator, cfg, num_q, batches)
    assert isinstance(got, OrderedDict)
    assert list(got) == list(ref)
    if option == "ROC":
        assert [k for k in got if k.startswith("TPR")] == ["TPR@FPR=1e-04", "TPR@FPR=1e-03", "TPR@FPR=1e-02"]
    for key in ref:
        assert float(got[key]) == pytest.approx(float(ref[key]), abs=1e-6), key
    assert 0 < got["mAP"] <= 100  # percent, as fastreid prints


def test_evaluator_ties_rule_from_config():
    """TEST.TIES: 'fastreid' gives fastreid's ReidEvaluator numbers on tied features, the default
    ('pessimistic', also without add_ewth_config) the slow loop's with wrong matches first."""
    num_q, batches = make_batches(seed=3)
    # integer-valued features: many exact correct/wrong ties
    batches = [(inputs, torch.round(outputs / 2)) for inputs, outputs in batches]
    pids = np.concatenate([b[0]["targets"].numpy() for b in batches])
    cams = np.concatenate([b[0]["camids"].numpy() for b in batches])
    feats = torch.cat([b[1] for b in batches])
    dist = build_dist(feats[:num_q], feats[num_q:], "cosine")
    assert correct_wrong_ties(dist, pids[:num_q], pids[num_q:], cams[:num_q], cams[num_q:]) > 0
    cfg = get_cfg()
    ref = run_evaluator(reid_evaluation.ReidEvaluator, cfg, num_q, batches)
    pessimistic = run_evaluator(ExactReidEvaluator, cfg, num_q, batches)
    slow = slow_reference(dist, pids[:num_q], pids[num_q:], cams[:num_q], cams[num_q:], 50, "pessimistic")
    assert pessimistic["mAP"] == pytest.approx(100 * np.mean(slow[1]), abs=1e-9)
    assert pessimistic["mAP"] < ref["mAP"]
    add_ewth_config(cfg)
    assert cfg.TEST.TIES == "pessimistic"
    cfg.TEST.TIES = "fastreid"
    got = run_evaluator(ExactReidEvaluator, cfg, num_q, batches)
    for key in ref:
        assert float(got[key]) == pytest.approx(float(ref[key]), abs=1e-9), key
    cfg.TEST.TIES = "random"
    with pytest.raises(ValueError, match="TEST.TIES"):
        ExactReidEvaluator(cfg, num_q)


def test_evaluator_gathers_across_processes(monkeypatch):
    from fastreid_ewth.evaluation import evaluator as evaluator_module

    cfg = get_cfg()
    num_q, batches = make_batches(seed=1)
    single = run_evaluator(ExactReidEvaluator, cfg, num_q, batches)

    # process 0 saw the first two batches, process 1 the rest; gather hands both lists to process 0
    ev0, ev1 = ExactReidEvaluator(cfg, num_q), ExactReidEvaluator(cfg, num_q)
    for i, (inputs, outputs) in enumerate(batches):
        (ev0 if i < 2 else ev1).process(inputs, outputs)
    comm = evaluator_module.comm
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "synchronize", lambda: None)
    monkeypatch.setattr(comm, "gather", lambda data, dst=0: [ev0._predictions, ev1._predictions])
    monkeypatch.setattr(comm, "is_main_process", lambda: True)
    gathered = ev0.evaluate()
    assert list(gathered) == list(single)
    for key in single:
        assert gathered[key] == pytest.approx(single[key], abs=1e-9)
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    assert ev1.evaluate() == {}


def test_evaluator_never_compiles(monkeypatch):
    import subprocess

    from fastreid.evaluation import rank_cylib

    def forbidden(*args, **kwargs):
        raise AssertionError("the evaluator tried to compile / spawn: {}".format(args))

    monkeypatch.setattr(rank_cylib, "compile_helper", forbidden)
    monkeypatch.setattr(subprocess, "run", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    cfg = get_cfg()
    num_q, batches = make_batches(seed=2)
    assert run_evaluator(ExactReidEvaluator, cfg, num_q, batches)["Rank-1"] > 0


def test_evaluator_errors():
    cfg = get_cfg()
    cfg.TEST.METRIC = "manhattan"
    with pytest.raises(ValueError, match="manhattan"):
        ExactReidEvaluator(cfg, 10)
    cfg = get_cfg()
    num_q, batches = make_batches(seed=3)
    with pytest.raises(ValueError, match="num_query=360"):
        run_evaluator(ExactReidEvaluator, cfg, 360, batches)
    inputs, outputs = batches[0]
    outputs = outputs.clone()
    outputs[[2, 7]] = float("nan")
    with pytest.raises(ValueError, match=r"query features has 2 row"):
        run_evaluator(ExactReidEvaluator, cfg, num_q, [(inputs, outputs)] + batches[1:])


def test_results_print_as_fastreid_table(caplog):
    import logging

    from fastreid.evaluation.testing import print_csv_format

    cfg = get_cfg()
    cfg.TEST.ROC.ENABLED = True
    num_q, batches = make_batches(seed=4)
    results = run_evaluator(ExactReidEvaluator, cfg, num_q, batches)
    results["dataset"] = "SynthReID"  # added by fastreid's trainer before printing
    with caplog.at_level(logging.INFO, logger="fastreid.evaluation.testing"):
        print_csv_format(results)
    table = caplog.text
    for column in ("Dataset", "Rank-1", "Rank-5", "Rank-10", "mAP", "mINP", "metric", "TPR@FPR=1e-04"):
        assert column in table
    assert "SynthReID | {:.2f}".format(float(results["Rank-1"])) in table


# --------------------------------------------------------------------------------------------------
# the benchmark script runs (its timings are not tested: they depend on the machine)
# --------------------------------------------------------------------------------------------------
def test_bench_eval_quick_runs(monkeypatch, capsys):
    path = pathlib.Path(__file__).resolve().parents[1] / "tools" / "bench_eval.py"
    spec = importlib.util.spec_from_file_location("bench_eval", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(sys, "argv", [str(path), "--quick", "--skip-memory"])
    bench.main()
    out = capsys.readouterr().out
    for name in ("Market1501-sized", "MSMT17-sized"):
        assert "{} evaluate/matmul ratio".format(name) in out
    assert "(goal <= 1.3)" in out
    assert "agreement vs fastreid Python: identical (cmc, all_AP, all_INP bit for bit)" in out
