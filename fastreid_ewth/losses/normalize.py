"""Feature normalisation before the metric loss (``NORM_FEAT``; the TH_FN variant, ``docs/losses.md``)."""
import torch.nn.functional as F

#: Valid ``norm_feat`` values: ``l2`` = every feature to unit length (AGW); ``max`` = the whole batch
#: divided by its largest feature norm (BoT).
NORM_FEATS = ("none", "l2", "max")


def normalize_features(features, norm_feat):
    """``features`` (N×D) normalised as ``norm_feat`` says -> N×D; differentiable."""
    if norm_feat == "none":
        return features
    if norm_feat == "l2":
        return F.normalize(features, dim=1, eps=1e-12)
    if norm_feat == "max":
        return features / features.norm(dim=1).amax().clamp(min=1e-12)
    raise ValueError(f"norm_feat={norm_feat!r} is not one of {NORM_FEATS}; set NORM_FEAT to one of them.")
