"""The options of the EWTH loss family, defined once: python name, config key, default and rule.

:data:`EWTH_OPTIONS` is the only place where an option's default or valid range is written down.
:func:`~fastreid_ewth.losses.ewth_loss` and ``EWTHLoss`` check their keyword options with
:func:`check_ewth_options`; ``EWTHLoss.from_config`` reads them with :func:`ewth_options_from_config`;
``add_ewth_config`` writes :func:`ewth_config_defaults` into ``MODEL.LOSSES.EWTH``. A bad value is
refused with the same message whichever way it came in: the value, the config key, the python
argument, the valid range and a fix. What each option means is in ``docs/losses.md``.

Nothing here knows about fastreid: the config is read as a plain mapping.
"""
import math
import numbers
import types
from typing import Callable, NamedTuple

from .normalize import NORM_FEATS
from .terms import VARIANTS

__all__ = [
    "CONFIG_NODE",
    "EWTH_DEFAULTS",
    "EWTH_OPTIONS",
    "Option",
    "check_ewth_options",
    "ewth_config_defaults",
    "ewth_options_from_config",
]

#: The config node that holds the options, one key per option.
CONFIG_NODE = "MODEL.LOSSES.EWTH"


class _Refused(Exception):
    pass


class Option(NamedTuple):
    """One option of the EWTH family."""

    #: keyword of ``ewth_loss`` and ``EWTHLoss``
    name: str
    #: key under :data:`CONFIG_NODE`
    key: str
    default: object
    #: the valid range in words; completes "it must be ..."
    allowed: str
    #: how to repair a refused value
    fix: str
    #: ``parse(value, earlier)`` -> the value to use, or raises ``_Refused``; ``earlier`` holds the
    #: already checked options that come before this one in :data:`EWTH_OPTIONS`
    parse: Callable

    @property
    def config_key(self):
        return f"{CONFIG_NODE}.{self.key}"

    def message(self, value):
        """The error message for the refused ``value``."""
        return (f"{self.config_key} is {value!r} (python argument {self.name}={value!r}), but it must be "
                f"{self.allowed}; {self.fix}.")

    def check(self, value, earlier):
        """``value`` as the loss uses it, or ``ValueError`` with :meth:`message`."""
        try:
            return self.parse(value, earlier)
        except _Refused:
            raise ValueError(self.message(value)) from None


# --------------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------------
def _choice(choices):
    def parse(value, earlier):
        if not isinstance(value, str) or value not in choices:
            raise _Refused
        return value

    return parse


def _finite(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Refused
    value = float(value)
    if not math.isfinite(value):
        raise _Refused
    return value


def _any_finite(value, earlier):
    return _finite(value)


def _hinge_margin(value, earlier):
    # a margin of the hinge terms; with the soft margin (MARGIN <= 0) it is not used, any number goes
    value = _finite(value)
    if value < 0 and earlier["margin"] > 0:
        raise _Refused
    return value


def _unit_interval(value, earlier):
    value = _finite(value)
    if not 0.0 <= value < 1.0:
        raise _Refused
    return value


def _non_negative(value, earlier):
    value = _finite(value)
    if value < 0:
        raise _Refused
    return value


_HINGE_ALLOWED = ("a finite number, and >= 0 while MARGIN > 0 selects the hinge terms (a negative hinge margin "
                  "is not allowed; with MARGIN <= 0 the soft margin ignores it)")
_HINGE_FIX = "use a margin >= 0 (the paper uses 0.3), or MARGIN 0 for the soft margin on every term"

#: Every option of the EWTH family, in the order they are checked (``margin`` before the margins
#: whose rule depends on it). Defaults are the paper's: m = φ = α = 0.3, t = 0.1.
EWTH_OPTIONS = (
    Option("variant", "VARIANT", "HNEWTH", "one of " + ", ".join(VARIANTS),
           "set it to one of them (HNEWTH is the paper's full loss)", _choice(tuple(VARIANTS))),
    Option("margin", "MARGIN", 0.3,
           "a finite number: m > 0 is the TriHard hinge margin, m <= 0 switches every term to the soft margin",
           "use 0.3 as in the paper, or 0 for the soft margin", _any_finite),
    Option("mean_neg_margin", "MEAN_NEG_MARGIN", 0.3, _HINGE_ALLOWED, _HINGE_FIX, _hinge_margin),
    Option("ew_margin", "EW_MARGIN", 0.3, _HINGE_ALLOWED, _HINGE_FIX, _hinge_margin),
    Option("ew_threshold", "EW_THRESHOLD", 0.1,
           "a number in [0, 1): element differences are normalised by their maximum, so they lie in [0, 1) and "
           "a threshold of 1 or more would zero every element weight",
           "use 0.1 as in the paper", _unit_interval),
    Option("norm_feat", "NORM_FEAT", "none", "one of " + ", ".join(repr(v) for v in NORM_FEATS),
           "'none' keeps the features, 'l2' scales each to unit length (AGW's TH_FN), 'max' divides the batch by "
           "its largest norm (BoT's TH_FN)", _choice(NORM_FEATS)),
    Option("scale", "SCALE", 1.0, "a finite number >= 0 (the weight of every EWTH term in the total loss)",
           "use 1.0, or drop EWTHLoss from MODEL.LOSSES.NAME to train without it", _non_negative),
)

#: Option name -> default (read only).
EWTH_DEFAULTS = types.MappingProxyType({option.name: option.default for option in EWTH_OPTIONS})

_NAMES = tuple(option.name for option in EWTH_OPTIONS)


def check_ewth_options(**options):
    """All the options, defaults filled in, numbers as floats -> dict in the order of :data:`EWTH_OPTIONS`.

    Raises ``TypeError`` for a name that is no option and ``ValueError`` (:meth:`Option.message`) for the
    first refused value.
    """
    unknown = [name for name in options if name not in EWTH_DEFAULTS]
    if unknown:
        raise TypeError(f"unknown EWTH option(s) {', '.join(map(repr, unknown))}; the options are "
                        f"{', '.join(_NAMES)} (config keys under {CONFIG_NODE}).")
    checked = {}
    for option in EWTH_OPTIONS:
        checked[option.name] = option.check(options.get(option.name, option.default), checked)
    return checked


def ewth_options_from_config(node):
    """The options as python keywords, read from the config node :data:`CONFIG_NODE` (any mapping)."""
    return {option.name: node[option.key] for option in EWTH_OPTIONS}


def ewth_config_defaults():
    """Config key (under :data:`CONFIG_NODE`) -> default, for ``add_ewth_config``."""
    return {option.key: option.default for option in EWTH_OPTIONS}

