"""Input checks shared by the rank, feature and evaluator entry points.

Every check raises ``ValueError`` that names the offending argument, its shape or value, and what to
pass instead, so a user reading a failed evaluation knows which of six arrays is wrong.
"""
import numbers

import numpy as np
import torch


def as_numpy(x):
    """A numpy view of ``x`` (numpy array, torch tensor on any device, or sequence)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def as_distmat(distmat):
    """``distmat`` as a 2-D numpy array (Q×G) of real numbers (or booleans), dtype unchanged."""
    d = as_numpy(distmat)
    if d.ndim != 2:
        raise ValueError(
            "distmat must be a 2-D (num_query × num_gallery) matrix, got shape {}; "
            "pass distances[query, gallery]".format(tuple(d.shape)))
    if not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer) or d.dtype == np.bool_):
        raise ValueError("distmat must hold real numbers, got dtype {}".format(d.dtype))
    return d


def as_labels(labels, name, expected, owner):
    """``labels`` as a 1-D numpy array of length ``expected``.

    ``owner`` describes where ``expected`` comes from (e.g. "distmat of shape (5, 9) has 5 query rows") and
    is quoted in the error.
    """
    a = as_numpy(labels)
    if a.ndim != 1 or a.shape[0] != expected:
        raise ValueError(
            "{} has shape {} but {}; pass one label per row, in the same order".format(
                name, tuple(a.shape), owner))
    return a


def check_max_rank(max_rank):
    if isinstance(max_rank, (bool, np.bool_)) or not isinstance(max_rank, numbers.Integral) or max_rank < 1:
        raise ValueError("max_rank must be a positive integer, got {!r}".format(max_rank))
    return int(max_rank)


def check_block_size(block_size):
    if block_size is None:
        return None
    if isinstance(block_size, (bool, np.bool_)) or not isinstance(block_size, numbers.Integral) or block_size < 1:
        raise ValueError("block_size must be a positive number of query rows or None (automatic), "
                         "got {!r}".format(block_size))
    return int(block_size)


def check_no_nan_rows(block, first_row, name="distmat"):
    """Raise if any row of ``block`` (a row slice of ``name`` starting at ``first_row``) holds NaN.

    NaN has no place in a ranking: numpy sorts it after everything, so a NaN distance would silently
    count as "farthest" rather than flag the broken feature that produced it.
    """
    if not np.issubdtype(block.dtype, np.floating):
        return
    bad = np.isnan(block).any(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad) + first_row
        raise ValueError(
            "{} has NaN in {} row(s) of this block (first at query row {}); NaN distances come from NaN/inf "
            "features — check the features of those queries".format(name, rows.size, int(rows[0])))


def as_features(feats, name):
    """``feats`` as a 2-D floating torch tensor on the CPU (N×D), rejecting rows with NaN/inf.

    float32 and float64 keep their dtype (distances are then what fastreid's ``build_dist`` gives for the
    same tensor); other dtypes become float32.
    """
    t = feats.detach().cpu() if isinstance(feats, torch.Tensor) else torch.from_numpy(np.asarray(feats))
    if t.dim() != 2:
        raise ValueError("{} must be a 2-D (num_images × feature_dim) matrix, got shape {}".format(
            name, tuple(t.shape)))
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    # a row sum is finite only if every element is (inf and NaN propagate): one pass and no (N, D) mask;
    # rows whose sum overflows are checked element by element
    suspect = torch.nonzero(~torch.isfinite(t.sum(dim=1)))[:, 0]
    bad = torch.zeros(t.shape[0], dtype=torch.bool)
    if suspect.numel():
        bad[suspect] = ~torch.isfinite(t[suspect]).all(dim=1)
    n_bad = int(bad.sum())
    if n_bad:
        first = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            "{} has {} row(s) (of {}) containing NaN or inf, first at row {}; the model produced non-finite "
            "features for those images — check the checkpoint and the inputs".format(name, n_bad, t.shape[0], first))
    return t
