"""EWTH loss family as pure tensor functions (no fastreid, no config objects).

Public: :func:`ewth_loss` and :data:`EWTH_VARIANTS`. The pieces it is built from (distances,
mining, element weights, the terms table) are importable for reuse and testing.
"""
from .distance import anchor_pair_distance, pairwise_distance
from .element_weight import element_weights
from .ewth import EWTH_VARIANTS, TERM_NAMES, ewth_loss
from .mining import HardMining, hard_example_mining, mean_negative_distance
from .normalize import NORM_FEATS, normalize_features

__all__ = [
    "EWTH_VARIANTS",
    "NORM_FEATS",
    "TERM_NAMES",
    "HardMining",
    "anchor_pair_distance",
    "element_weights",
    "ewth_loss",
    "hard_example_mining",
    "mean_negative_distance",
    "normalize_features",
    "pairwise_distance",
]
