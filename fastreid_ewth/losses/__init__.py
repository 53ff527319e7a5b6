"""EWTH loss family as pure tensor functions (no fastreid, no config objects).

Public: :func:`ewth_loss`, :data:`EWTH_VARIANTS` and the option table :data:`EWTH_OPTIONS`
(:mod:`.options`). The pieces it is built from (distances, mining, element weights, the terms
table, the diagnostics) are importable for reuse and testing. Formulas: ``docs/losses.md``.
"""
from .autocast import autocast_disabled, autocast_enabled
from .diagnostics import DIAGNOSTIC_NAMES, diagnostic_values
from .distance import anchor_pair_distance, pairwise_distance
from .element_weight import element_weights
from .ewth import EWTH_VARIANTS, TERM_NAMES, ewth_loss
from .mining import HardMining, hard_example_mining, mean_negative_distance
from .normalize import NORM_FEATS, normalize_features
from .options import EWTH_DEFAULTS, EWTH_OPTIONS, check_ewth_options

__all__ = [
    "DIAGNOSTIC_NAMES",
    "EWTH_DEFAULTS",
    "EWTH_OPTIONS",
    "EWTH_VARIANTS",
    "NORM_FEATS",
    "TERM_NAMES",
    "HardMining",
    "anchor_pair_distance",
    "autocast_disabled",
    "autocast_enabled",
    "check_ewth_options",
    "diagnostic_values",
    "element_weights",
    "ewth_loss",
    "hard_example_mining",
    "mean_negative_distance",
    "normalize_features",
    "pairwise_distance",
]
