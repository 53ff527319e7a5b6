"""The valid values of the config keys users set, as a table of rules, and ``check_config_values``.

yacs checks only that a value has its default's type, so ``SOLVER.BASE_LR -1.0`` would train without a word
and ``SOLVER.MAX_EPOCH 0`` would fail deep inside fastreid's trainer. Each :class:`Rule` of :data:`RULES`
says, as data, what one key means, its valid values (:class:`Number`, :class:`Choice`, :class:`Flag`,
:class:`Items`), optionally a range of legal but unusual values that earns a warning, and the fix.

The keys of a loss node are declared by the node's ``LOSS_REGISTRY`` entry, next to its defaults: the
``rules`` of a :class:`~fastreid_ewth.modeling.registry.ReidLoss` (relative to its ``config_node``), the EWTH
option table (:mod:`fastreid_ewth.losses.options`) and the centre loss's check. :func:`check_config_values`
applies :data:`RULES` and the checks of every loss ``MODEL.LOSSES.NAME`` lists, logs a warning for each
unusual value and raises one ``ValueError`` listing every refused value. ``validate_run`` calls it before
``OUTPUT_DIR`` exists, so a refused run leaves nothing behind. ``docs/config.md`` is
:func:`render_config_doc`'s rendering of these tables.
"""
import logging
import math
import numbers
from dataclasses import dataclass, fields, replace
from typing import Optional, Tuple

from fastreid.layers import any_softmax, pooling

from ..evaluation.distance import METRICS
from ..evaluation.rank import TIES
from ..modeling.embedding_head import NECK_FEATS

logger = logging.getLogger(__name__)

__all__ = ["Rule", "Number", "Choice", "Flag", "Items", "Ref", "Named", "RULES", "ConfigValueError",
           "check_config_values", "check_rules", "review", "loss_rules", "render_config_doc"]

_MISSING = object()


def config_value(cfg, key):
    """``cfg``'s value at the dotted ``key``, or ``_MISSING``."""
    node = cfg
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return _MISSING
        node = node[part]
    return node


def _getter(cfg):
    """``key -> value`` (or ``_MISSING``) for ``cfg``: a config, such a function already, or ``None`` (no
    config: the bounds that refer to other keys stay unknown)."""
    if cfg is None or callable(cfg):
        return cfg
    return lambda key: config_value(cfg, key)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _fmt(x):
    return repr(x) if not isinstance(x, str) else x


# --------------------------------------------------------------------------------------------------
# Bounds and kinds of values
# --------------------------------------------------------------------------------------------------
class Ref(str):
    """A bound that is the value of another key, e.g. ``Ref("SOLVER.MAX_EPOCH")``."""

    __slots__ = ()


@dataclass(frozen=True)
class Named:
    """A constant bound written by name in the messages (``pi/2`` rather than 1.5707963267948966)."""

    value: float
    text: str


def _bound(bound, cfg):
    """The number a bound stands for, or ``None`` when it cannot be known (a referenced key that is
    missing, refused or not a number: its own rule reports it)."""
    if isinstance(bound, Ref):
        get = _getter(cfg)
        value = None if get is None else get(bound)
        return value if _is_real(value) else None
    if isinstance(bound, Named):
        return bound.value
    return bound


def _bound_text(bound, cfg):
    if isinstance(bound, Ref):
        value = _bound(bound, cfg)
        return str(bound) if value is None else "{} = {!r}".format(bound, value)
    if isinstance(bound, Named):
        return bound.text
    return _fmt(bound)


def _prefixed(kind, node):
    """``kind`` with its relative ``Ref`` bounds (those of an entry's rules) under ``node``."""
    changes = {}
    for f in fields(kind):
        value = getattr(kind, f.name)
        if isinstance(value, Ref) and not value.startswith(node + "."):
            changes[f.name] = Ref(node + "." + value)
        elif isinstance(value, Number):
            changes[f.name] = _prefixed(value, node)
    return replace(kind, **changes) if changes else kind


@dataclass(frozen=True)
class Number:
    """A number (an integer with ``integer``) within optional bounds: a number, a :class:`Ref` or :class:`Named`;
    ``lo_open`` / ``hi_open`` exclude the bound itself. Finite unless ``finite`` is False (inf allowed)."""

    lo: object = None
    hi: object = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    finite: bool = True

    type_name = property(lambda self: "integer" if self.integer else "number")

    def type_ok(self, value):
        if not _is_real(value) or (self.integer and not isinstance(value, numbers.Integral)):
            return False
        return math.isfinite(value) if self.finite else not math.isnan(value)

    def in_range(self, value, cfg=None, unknown=True):
        """Whether ``value`` lies within the bounds; a bound that cannot be known counts as ``unknown``."""
        lo, hi = _bound(self.lo, cfg), _bound(self.hi, cfg)
        if (lo is None and self.lo is not None) or (hi is None and self.hi is not None):
            if not unknown:
                return False
        if lo is not None and (value <= lo if self.lo_open else value < lo):
            return False
        if hi is not None and (value >= hi if self.hi_open else value > hi):
            return False
        return True

    def accepts(self, value, cfg=None):
        return self.type_ok(value) and self.in_range(value, cfg)

    def bounds_text(self, cfg=None):
        lo = None if self.lo is None else _bound_text(self.lo, cfg)
        hi = None if self.hi is None else _bound_text(self.hi, cfg)
        if lo is not None and hi is not None:
            return "in {}{}, {}{}".format("(" if self.lo_open else "[", lo, hi, ")" if self.hi_open else "]")
        if lo is not None:
            return "{} {}".format(">" if self.lo_open else ">=", lo)
        if hi is not None:
            return "{} {}".format("<" if self.hi_open else "<=", hi)
        return ""

    def describe(self, cfg=None):
        noun = "an integer" if self.integer else "a number" if self.finite else "a number (inf allowed)"
        bounds = self.bounds_text(cfg)
        return noun + (" " + bounds if bounds else "")


@dataclass(frozen=True)
class Choice:
    """One of ``options`` (of their type: ``True`` is not the choice ``1``)."""

    options: Tuple

    @property
    def type_name(self):
        return "string" if all(isinstance(o, str) for o in self.options) else "integer"

    def accepts(self, value, cfg=None):
        return any(type(value) is type(o) and value == o for o in self.options)

    def describe(self, cfg=None):
        return "one of " + ", ".join(repr(o) for o in self.options)


@dataclass(frozen=True)
class Flag:
    """``True`` or ``False``."""

    type_name = "bool"

    def accepts(self, value, cfg=None):
        return isinstance(value, bool)

    def describe(self, cfg=None):
        return "True or False"


@dataclass(frozen=True)
class Items:
    """A list (or tuple) of ``item`` values: ``lengths`` the allowed lengths (any when empty), ``order`` ``"<"``
    (strictly ascending) or ``"<="`` (ascending) or ``None``."""

    item: Number
    lengths: Tuple = ()
    order: Optional[str] = None

    @property
    def type_name(self):
        return "list of {}s".format(self.item.type_name)

    def accepts(self, value, cfg=None):
        if not isinstance(value, (list, tuple)) or (self.lengths and len(value) not in self.lengths):
            return False
        if not all(self.item.accepts(v, cfg) for v in value):
            return False
        pairs = list(zip(value, value[1:]))
        if self.order == "<":
            return all(a < b for a, b in pairs)
        if self.order == "<=":
            return all(a <= b for a, b in pairs)
        return True

    def describe(self, cfg=None):
        count = " or ".join(str(n) for n in self.lengths) + " " if self.lengths else ""
        order = {"<": " in strictly ascending order", "<=": " in ascending order"}.get(self.order, "")
        bounds = self.item.bounds_text(cfg)
        return "a list of {}{}s{}{}".format(count, self.item.type_name, order, ", each " + bounds if bounds else "")


# --------------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """The valid values of one config key.

    ``what`` says what the key is (in the message's parentheses), ``fix`` how to repair a refused value
    ("set e.g. ..."). A legal value in ``unusual`` (a :class:`Number`; for :class:`Items`, any item in it) is
    warned about with ``why``. With ``when`` = ``(key, values)`` the rule applies only while ``key`` holds one
    of ``values`` (a key that only matters then).
    """

    key: str
    valid: object
    what: str
    fix: str
    unusual: Optional[Number] = None
    why: str = ""
    when: Tuple = ()

    def under(self, node):
        """This rule with its key (and the keys it refers to) relative to the config node ``node``."""
        when = (node + "." + self.when[0], self.when[1]) if self.when else ()
        unusual = None if self.unusual is None else _prefixed(self.unusual, node)
        return replace(self, key=node + "." + self.key, valid=_prefixed(self.valid, node), unusual=unusual,
                       when=when)

    def applies(self, cfg):
        return not self.when or config_value(cfg, self.when[0]) in self.when[1]

    def valid_text(self, cfg=None):
        text = self.valid.describe(cfg)
        if self.when:
            text += " when {} is {}".format(self.when[0], " or ".join(repr(v) for v in self.when[1]))
        return text

    def unusual_text(self, cfg=None):
        if self.unusual is None:
            return ""
        bounds = self.unusual.bounds_text(cfg)
        return "an item " + bounds if isinstance(self.valid, Items) else bounds

    def is_unusual(self, value, cfg):
        if self.unusual is None:
            return False
        values = value if isinstance(self.valid, Items) else [value]
        # an unusual range bounded by a key that is refused or missing says nothing
        return any(self.unusual.type_ok(v) and self.unusual.in_range(v, cfg, unknown=False) for v in values)

    def message(self, value, cfg=None):
        """The error for the refused ``value``: key, value, its type, the valid range, what it is, the fix."""
        return "{} is {!r} ({}), but it must be {} ({}); {}".format(
            self.key, value, type(value).__name__, self.valid_text(cfg), self.what, self.fix)

    def warning(self, value, cfg=None):
        """The warning for the legal but unusual ``value``."""
        return "{} is {!r}, which is allowed but unusual ({}): {}; if that is not what you meant, {}".format(
            self.key, value, self.unusual_text(cfg), self.why, self.fix)


class ConfigValueError(ValueError):
    """Refused config values; ``problems`` holds one message per refused value."""

    def __init__(self, problems):
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = "{} config values are refused:\n  - {}".format(len(self.problems), "\n  - ".join(self.problems))
        super().__init__(text)

    def __reduce__(self):  # rebuilt from the list of messages, not from the joined text
        return type(self), (self.problems,)


def review(cfg, rules):
    """``(problems, warnings)``: the messages of the refused and of the unusual values of ``cfg`` under
    ``rules``. A key ``cfg`` does not have is skipped: a config built without ``add_ewth_config`` lacks the
    plugin's keys, and the code that would read them does not run on it."""
    def one_pass(refused_keys):
        # a bound that refers to a refused key is unknown: SOLVER.MAX_EPOCH 0 must not also make every key
        # bounded by it look wrong
        def get(key):
            return _MISSING if key in refused_keys else config_value(cfg, key)

        refused, problems, warnings = set(), [], []
        for rule in rules:
            value = config_value(cfg, rule.key)
            if value is _MISSING or not rule.applies(cfg):
                continue
            if not rule.valid.accepts(value, get):
                refused.add(rule.key)
                problems.append(rule.message(value, get))
            elif rule.is_unusual(value, get):
                warnings.append(rule.warning(value, get))
        return refused, problems, warnings

    refused = one_pass(set())[0]
    return one_pass(refused)[1:]


def check_rules(cfg, rules):
    """Raise :class:`ConfigValueError` (a ``ValueError``) for the values of ``cfg`` that ``rules`` refuse;
    return the warnings for its unusual values (not logged)."""
    problems, warnings = review(cfg, rules)
    if problems:
        raise ConfigValueError(problems)
    return warnings


def _listed_entries(cfg):
    """The registered entries of the losses ``MODEL.LOSSES.NAME`` lists; an unknown, repeated or missing name
    is ``validate_run``'s to refuse, with the message of the meta-architecture that would train it."""
    from ..modeling.registry import LOSS_REGISTRY, registered_losses  # the registry imports this module lazily

    names = config_value(cfg, "MODEL.LOSSES.NAME")
    known = set(registered_losses())
    if not isinstance(names, (list, tuple)):
        return []
    return [LOSS_REGISTRY.get(n) for n in dict.fromkeys(names) if isinstance(n, str) and n in known]


def check_config_values(cfg):
    """Check every value of :data:`RULES` and of the config nodes of the losses ``cfg`` trains.

    Logs a warning for each legal but unusual value and raises one :class:`ConfigValueError` (a
    ``ValueError``) naming every refused value, its type, valid range and fix. Returns the warnings.
    """
    problems, warnings = review(cfg, RULES)
    for entry in _listed_entries(cfg):
        try:
            entry.check_config(cfg)  # its SCALE, its rules, and any check across its keys
        except ConfigValueError as e:
            problems.extend(e.problems)
        except ValueError as e:
            problems.append(str(e))
        warnings.extend(review(cfg, loss_rules(entry))[1])
    for warning in warnings:
        logger.warning(warning)
    if problems:
        raise ConfigValueError(problems)
    return warnings


def loss_rules(entry):
    """The rules of a ``LOSS_REGISTRY`` entry's keys, under its config node (none for entries without)."""
    return tuple(rule.under(entry.config_node) for rule in getattr(entry, "rules", ()))


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------
def _positive(**kw):
    return Number(lo=0, lo_open=True, **kw)


def _at_least(n, **kw):
    return Number(lo=n, **kw)


_PROB = Number(lo=0, hi=1)
_INT = dict(integer=True)
_MAX_EPOCH = Ref("SOLVER.MAX_EPOCH")

#: What ``SOLVER.OPT`` may name: fastreid builds ``SGD`` with MOMENTUM and NESTEROV and any other name as
#: ``getattr(torch.optim, name)`` with the learning rate and weight decay of its parameter groups only, so
#: only the optimizers that take both (not Rprop, not LBFGS, which needs a closure, nor SparseAdam).
OPTIMIZERS = ("Adam", "AdamW", "SGD", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta", "ASGD")
#: the schedulers fastreid's ``build_lr_scheduler`` has arguments for
SCHEDULERS = ("MultiStepLR", "CosineAnnealingLR")
#: fastreid's ``WarmupLR`` methods
WARMUP_METHODS = ("linear", "constant", "exp")
#: the training samplers fastreid's ``build_reid_train_loader`` builds
SAMPLERS = ("TrainingSampler", "NaiveIdentitySampler", "BalancedIdentitySampler", "SetReWeightSampler",
            "ImbalancedDatasetSampler")
#: fastreid's pooling layers that give one vector per image (Identity and Flatten keep the feature map,
#: which the head's BNNeck and classifier cannot take)
POOL_LAYERS = tuple(name for name in pooling.__all__ if name not in ("Identity", "Flatten"))
#: torchvision's ``Pad`` modes (INPUT.PADDING.MODE)
PADDING_MODES = ("constant", "edge", "reflect", "symmetric")

_SIZE = Items(Number(lo=1, **_INT), lengths=(1, 2))
_SIZE_WHAT = "[height, width] in pixels, or [shorter side]"
_DECAY_WHY = "weight decay above 0.1 pulls the weights to 0 faster than the loss trains them"
_WD_FIX = "set e.g. {} 0.0005 (BoT, AGW)"


def _prob(key, what, fix="set e.g. {} 0.5"):
    return Rule(key, _PROB, "the probability " + what, fix.format(key))


def _flag(key, what):
    return Rule(key, Flag(), what, "write True or False")


RULES = (
    # ---- SOLVER -----------------------------------------------------------------------------------
    Rule("SOLVER.OPT", Choice(OPTIMIZERS), "the optimizer, a torch.optim class",
         "set e.g. SOLVER.OPT Adam (BoT, AGW) or SGD"),
    Rule("SOLVER.BASE_LR", _positive(), "the learning rate; BoT uses 0.00035 with Adam",
         "set e.g. SOLVER.BASE_LR 0.00035", unusual=Number(lo=1, lo_open=True),
         why="a learning rate above 1 makes these models diverge"),
    Rule("SOLVER.HEADS_LR_FACTOR", _positive(), "multiplies SOLVER.BASE_LR for the head's parameters",
         "set e.g. SOLVER.HEADS_LR_FACTOR 1.0 (the head learns at SOLVER.BASE_LR)"),
    Rule("SOLVER.BIAS_LR_FACTOR", _positive(), "multiplies SOLVER.BASE_LR for the bias parameters",
         "set e.g. SOLVER.BIAS_LR_FACTOR 1.0"),
    Rule("SOLVER.WEIGHT_DECAY", _at_least(0), "the L2 weight decay", _WD_FIX.format("SOLVER.WEIGHT_DECAY"),
         unusual=Number(lo=0.1, lo_open=True), why=_DECAY_WHY),
    Rule("SOLVER.WEIGHT_DECAY_BIAS", _at_least(0), "the weight decay of the bias parameters",
         _WD_FIX.format("SOLVER.WEIGHT_DECAY_BIAS"), unusual=Number(lo=0.1, lo_open=True), why=_DECAY_WHY),
    Rule("SOLVER.WEIGHT_DECAY_NORM", _at_least(0), "the weight decay of the normalisation layers",
         _WD_FIX.format("SOLVER.WEIGHT_DECAY_NORM"), unusual=Number(lo=0.1, lo_open=True), why=_DECAY_WHY),
    Rule("SOLVER.MOMENTUM", Number(lo=0, hi=1, hi_open=True), "SGD's momentum", "set e.g. SOLVER.MOMENTUM 0.9"),
    _flag("SOLVER.NESTEROV", "SGD with Nesterov momentum"),
    Rule("SOLVER.SCHED", Choice(SCHEDULERS), "the learning-rate schedule after warm-up",
         "set e.g. SOLVER.SCHED MultiStepLR (decays by SOLVER.GAMMA at SOLVER.STEPS)"),
    Rule("SOLVER.MAX_EPOCH", _at_least(1, **_INT), "the number of training epochs",
         "set e.g. SOLVER.MAX_EPOCH 120 (BoT, AGW)"),
    # A milestone during warm-up is refused by build_epoch_scheduler at training time, a milestone 0 by
    # nobody (torch decays at once): both are caught here. One after the last epoch never happens; it is
    # allowed (a short test run keeps the recipe's STEPS) but warned about.
    Rule("SOLVER.STEPS", Items(Number(lo=Ref("SOLVER.WARMUP_EPOCHS"), lo_open=True, **_INT), order="<"),
         "the epochs at which the learning rate is multiplied by SOLVER.GAMMA; with SOLVER.WARMUP_EPOCHS > 0 "
         "counted from the start of training, after the warm-up",
         "list decay epochs after the warm-up, e.g. SOLVER.STEPS '[40, 70]' with SOLVER.WARMUP_EPOCHS 10 and "
         "SOLVER.MAX_EPOCH 120", unusual=Number(lo=_MAX_EPOCH, lo_open=True),
         why="a decay after the last epoch never happens"),
    Rule("SOLVER.GAMMA", _positive(), "the factor of each decay at SOLVER.STEPS", "set e.g. SOLVER.GAMMA 0.1",
         unusual=Number(lo=1, lo_open=True), why="a factor above 1 raises the learning rate at each step"),
    Rule("SOLVER.ETA_MIN_LR", Number(lo=0, hi=Ref("SOLVER.BASE_LR"), hi_open=True),
         "the final learning rate of the cosine schedule", "set e.g. SOLVER.ETA_MIN_LR 1e-07",
         when=("SOLVER.SCHED", ("CosineAnnealingLR",))),
    Rule("SOLVER.DELAY_EPOCHS", _at_least(0, **_INT), "epochs at full learning rate before the cosine schedule",
         "set e.g. SOLVER.DELAY_EPOCHS 0", unusual=Number(lo=_MAX_EPOCH),
         why="the schedule never starts within SOLVER.MAX_EPOCH"),
    Rule("SOLVER.WARMUP_FACTOR", Number(lo=0, hi=1, lo_open=True), "the learning rate at the start of warm-up, "
         "as a fraction of SOLVER.BASE_LR", "set e.g. SOLVER.WARMUP_FACTOR 0.01 (BoT, AGW)"),
    Rule("SOLVER.WARMUP_ITERS", _at_least(0, **_INT), "warm-up iterations (used when SOLVER.WARMUP_EPOCHS is 0)",
         "set e.g. SOLVER.WARMUP_ITERS 0, or use SOLVER.WARMUP_EPOCHS"),
    Rule("SOLVER.WARMUP_EPOCHS", _at_least(0, **_INT), "warm-up epochs; > 0 replaces SOLVER.WARMUP_ITERS",
         "set e.g. SOLVER.WARMUP_EPOCHS 10 (BoT, AGW: 10 of 120 epochs)", unusual=Number(lo=_MAX_EPOCH),
         why="the whole run is warm-up and never trains at SOLVER.BASE_LR"),
    Rule("SOLVER.WARMUP_METHOD", Choice(WARMUP_METHODS), "how the warm-up factor rises to 1",
         "set e.g. SOLVER.WARMUP_METHOD linear"),
    Rule("SOLVER.FREEZE_ITERS", _at_least(0, **_INT), "iterations during which MODEL.FREEZE_LAYERS are frozen",
         "set e.g. SOLVER.FREEZE_ITERS 0"),
    Rule("SOLVER.IMS_PER_BATCH", _at_least(1, **_INT), "images per batch over all processes",
         "set e.g. SOLVER.IMS_PER_BATCH 64 (P×K = 16×4)"),
    Rule("SOLVER.CHECKPOINT_PERIOD", _at_least(1, **_INT), "a checkpoint every this many epochs",
         "set e.g. SOLVER.CHECKPOINT_PERIOD 10"),
    _flag("SOLVER.AMP.ENABLED", "mixed precision on CUDA"),
    _flag("SOLVER.CLIP_GRADIENTS.ENABLED", "gradient clipping"),
    Rule("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", Choice(("norm", "value")), "clip each parameter's gradient norm or "
         "each gradient value", "set e.g. SOLVER.CLIP_GRADIENTS.CLIP_TYPE norm"),
    Rule("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", _positive(), "the largest gradient norm or value",
         "set e.g. SOLVER.CLIP_GRADIENTS.CLIP_VALUE 5.0"),
    Rule("SOLVER.CLIP_GRADIENTS.NORM_TYPE", _positive(finite=False), "p of the L-p norm of 'norm' clipping",
         "set e.g. SOLVER.CLIP_GRADIENTS.NORM_TYPE 2.0 (.inf for the largest value)"),
    # ---- DATALOADER -------------------------------------------------------------------------------
    Rule("DATALOADER.NUM_WORKERS", _at_least(0, **_INT), "data-loading processes (0: in the training process)",
         "set e.g. DATALOADER.NUM_WORKERS 4"),
    Rule("DATALOADER.NUM_INSTANCE", _at_least(1, **_INT), "images per identity in a batch (K of P×K)",
         "set e.g. DATALOADER.NUM_INSTANCE 4"),
    Rule("DATALOADER.SAMPLER_TRAIN", Choice(SAMPLERS), "how training batches are drawn",
         "set e.g. DATALOADER.SAMPLER_TRAIN NaiveIdentitySampler (P×K batches, BoT, AGW)"),
    Rule("DATALOADER.SET_WEIGHT", Items(_at_least(0, **_INT)), "identities per camera in a batch of "
         "SetReWeightSampler", "list one count per camera, e.g. DATALOADER.SET_WEIGHT '[2, 2]'"),
    # ---- INPUT ------------------------------------------------------------------------------------
    Rule("INPUT.SIZE_TRAIN", _SIZE, "training images are resized to " + _SIZE_WHAT,
         "set e.g. INPUT.SIZE_TRAIN '[256, 128]'"),
    Rule("INPUT.SIZE_TEST", _SIZE, "test images are resized to " + _SIZE_WHAT,
         "set e.g. INPUT.SIZE_TEST '[256, 128]'"),
    _flag("INPUT.CROP.ENABLED", "random resized crop"),
    Rule("INPUT.CROP.SIZE", _SIZE, "the crop's output size, " + _SIZE_WHAT, "set e.g. INPUT.CROP.SIZE '[256, 128]'"),
    Rule("INPUT.CROP.SCALE", Items(Number(lo=0, hi=1, lo_open=True), lengths=(2,), order="<="),
         "[min, max] fraction of the image area a crop covers", "set e.g. INPUT.CROP.SCALE '[0.16, 1]'"),
    Rule("INPUT.CROP.RATIO", Items(_positive(), lengths=(2,), order="<="), "[min, max] aspect ratio of a crop",
         "set e.g. INPUT.CROP.RATIO '[0.75, 1.3333]'"),
    _flag("INPUT.FLIP.ENABLED", "random horizontal flip"),
    _prob("INPUT.FLIP.PROB", "of a flip"),
    _flag("INPUT.PADDING.ENABLED", "pad, then random crop back to INPUT.SIZE_TRAIN"),
    Rule("INPUT.PADDING.MODE", Choice(PADDING_MODES), "how the padding is filled",
         "set e.g. INPUT.PADDING.MODE constant"),
    Rule("INPUT.PADDING.SIZE", _at_least(0, **_INT), "pixels of padding on each side",
         "set e.g. INPUT.PADDING.SIZE 10 (BoT at 256×128)"),
    _flag("INPUT.CJ.ENABLED", "random colour jitter"),
    _prob("INPUT.CJ.PROB", "of a colour jitter"),
    Rule("INPUT.CJ.BRIGHTNESS", _at_least(0), "brightness jitter", "set e.g. INPUT.CJ.BRIGHTNESS 0.15"),
    Rule("INPUT.CJ.CONTRAST", _at_least(0), "contrast jitter", "set e.g. INPUT.CJ.CONTRAST 0.15"),
    Rule("INPUT.CJ.SATURATION", _at_least(0), "saturation jitter", "set e.g. INPUT.CJ.SATURATION 0.1"),
    Rule("INPUT.CJ.HUE", Number(lo=0, hi=0.5), "hue jitter, a fraction of the colour circle",
         "set e.g. INPUT.CJ.HUE 0.1"),
    _flag("INPUT.AFFINE.ENABLED", "random affine transform"),
    _flag("INPUT.AUTOAUG.ENABLED", "AutoAugment"),
    _prob("INPUT.AUTOAUG.PROB", "of AutoAugment", fix="set e.g. {} 0.1"),
    _flag("INPUT.AUGMIX.ENABLED", "AugMix"),
    _prob("INPUT.AUGMIX.PROB", "of AugMix", fix="set e.g. {} 0.1"),
    _flag("INPUT.REA.ENABLED", "random erasing"),
    _prob("INPUT.REA.PROB", "of random erasing"),
    Rule("INPUT.REA.VALUE", Items(Number(lo=0, hi=255), lengths=(1, 3)), "the fill of an erased box, per channel "
         "(images are 0..255)", "set e.g. INPUT.REA.VALUE '[123.675, 116.28, 103.53]' (the ImageNet mean)"),
    _flag("INPUT.RPT.ENABLED", "random patch"),
    _prob("INPUT.RPT.PROB", "of a random patch"),
    # ---- TEST -------------------------------------------------------------------------------------
    Rule("TEST.EVAL_PERIOD", _at_least(1, **_INT), "an evaluation every this many epochs, and one at the end",
         "set e.g. TEST.EVAL_PERIOD 10 (a period above SOLVER.MAX_EPOCH evaluates at the end only)"),
    Rule("TEST.IMS_PER_BATCH", _at_least(1, **_INT), "images per test batch", "set e.g. TEST.IMS_PER_BATCH 128"),
    Rule("TEST.METRIC", Choice(METRICS), "the distance of the evaluation",
         "set e.g. TEST.METRIC cosine (re-ranking is TEST.RERANK.ENABLED)"),
    Rule("TEST.TIES", Choice(TIES), "the order of a correct and a wrong match at exactly the same distance",
         "set TEST.TIES pessimistic (wrong first, the same on every machine) or fastreid (numpy's argsort order)"),
    _flag("TEST.FLIP.ENABLED", "the test feature is the mean of the image's and its mirror's"),
    _flag("TEST.ROC.ENABLED", "TPR at fixed FPRs"),
    _flag("TEST.AQE.ENABLED", "average query expansion"),
    Rule("TEST.AQE.QE_TIME", _at_least(1, **_INT), "rounds of query expansion", "set e.g. TEST.AQE.QE_TIME 1"),
    Rule("TEST.AQE.QE_K", _at_least(1, **_INT), "neighbours averaged in query expansion",
         "set e.g. TEST.AQE.QE_K 5"),
    Rule("TEST.AQE.ALPHA", _positive(), "the exponent of query expansion's weights", "set e.g. TEST.AQE.ALPHA 3.0"),
    _flag("TEST.RERANK.ENABLED", "k-reciprocal re-ranking"),
    Rule("TEST.RERANK.K1", _at_least(1, **_INT), "k of the k-reciprocal neighbours", "set e.g. TEST.RERANK.K1 20"),
    Rule("TEST.RERANK.K2", _at_least(1, **_INT), "neighbours of the local query expansion (1: none)",
         "set e.g. TEST.RERANK.K2 6", unusual=Number(lo=Ref("TEST.RERANK.K1"), lo_open=True),
         why="the local query expansion then averages over more neighbours than the k-reciprocal sets "
         "(TEST.RERANK.K1) hold"),
    Rule("TEST.RERANK.LAMBDA", Number(lo=0, hi=1), "the weight of the original distance against the Jaccard one",
         "set e.g. TEST.RERANK.LAMBDA 0.3"),
    # ---- MODEL ------------------------------------------------------------------------------------
    Rule("MODEL.BACKBONE.LAST_STRIDE", Choice((1, 2)), "the stride of the backbone's last stage",
         "set e.g. MODEL.BACKBONE.LAST_STRIDE 1 (BoT, AGW)"),
    Rule("MODEL.BACKBONE.FEAT_DIM", _at_least(1, **_INT), "channels of the backbone's output",
         "set it to the backbone's width, e.g. 2048 for ResNet-50, 512 for ResNet-18"),
    _flag("MODEL.BACKBONE.PRETRAIN", "start from ImageNet weights"),
    Rule("MODEL.HEADS.NUM_CLASSES", _at_least(0, **_INT), "identities of the classifier (0: from the training set)",
         "set e.g. MODEL.HEADS.NUM_CLASSES 0"),
    Rule("MODEL.HEADS.EMBEDDING_DIM", _at_least(0, **_INT), "width of an embedding layer (0: none)",
         "set e.g. MODEL.HEADS.EMBEDDING_DIM 0"),
    _flag("MODEL.HEADS.WITH_BNNECK", "a BNNeck between the pooled feature and the classifier"),
    Rule("MODEL.HEADS.NECK_FEAT", Choice(tuple(NECK_FEATS)), "the metric losses' feature: before or after "
         "the BNNeck", "set e.g. MODEL.HEADS.NECK_FEAT before (BoT, AGW)"),
    Rule("MODEL.HEADS.POOL_LAYER", Choice(POOL_LAYERS), "the pooling of the backbone's feature map",
         "set e.g. MODEL.HEADS.POOL_LAYER GlobalAvgPool (BoT) or GeneralizedMeanPoolingP (AGW)"),
    Rule("MODEL.HEADS.CLS_LAYER", Choice(tuple(any_softmax.__all__)), "the classification layer",
         "set e.g. MODEL.HEADS.CLS_LAYER Linear"),
    Rule("MODEL.HEADS.SCALE", _positive(), "the classification layer's logit scale",
         "set e.g. MODEL.HEADS.SCALE 1 (Linear) or 64 (CosSoftmax, ArcSoftmax)"),
    Rule("MODEL.HEADS.MARGIN", _at_least(0), "the margin of CosSoftmax (cosine), ArcSoftmax (radians) or "
         "CircleSoftmax", "set e.g. MODEL.HEADS.MARGIN 0.35 (CosSoftmax) or 0.5 (ArcSoftmax)",
         unusual=Number(lo=1, lo_open=True), why="a cosine margin above 1 separates nothing, an angle of 1 "
         "radian is 57 degrees"),
    Rule("MODEL.PIXEL_MEAN", Items(Number(lo=0, hi=255), lengths=(3,)), "the per-channel mean subtracted from "
         "0..255 images", "set e.g. MODEL.PIXEL_MEAN '[123.675, 116.28, 103.53]' (ImageNet)"),
    Rule("MODEL.PIXEL_STD", Items(_positive(), lengths=(3,)), "the per-channel deviation images are divided by",
         "set e.g. MODEL.PIXEL_STD '[58.395, 57.12, 57.375]' (ImageNet)"),
    # ---- the run ----------------------------------------------------------------------------------
    Rule("SEED", _at_least(-1, **_INT), "seed of python, numpy and torch (-1: at random)", "set e.g. SEED 0"),
    _flag("CUDNN_BENCHMARK", "let cuDNN pick the fastest convolution algorithms"),
)


# --------------------------------------------------------------------------------------------------
# docs/config.md
# --------------------------------------------------------------------------------------------------
_DOC_HEAD = """\
# Config values: what is checked before a run

`tools/train_net.py` (and `tools/embed.py`, `tools/evaluate.py`, `tools/export_onnx.py`) check every key
below before anything is written. A refused value stops the run with a non-zero exit status and a message
naming the key, the value, its type, the valid range and a fix (every refused value at once); a legal but
unusual value (column *warned about*) is logged as a warning and the run goes on. yacs itself refuses
unknown keys and a value of another type than the default's: `SOLVER.BASE_LR 5` for the float default,
write `5.0`.

This file is generated from the rule tables (`fastreid_ewth/config/schema.py` and the loss entries) and a
test keeps it in step:

    python -c "from fastreid_ewth.config.schema import render_config_doc as r; print(r(), end='')" > docs/config.md

"""

_LOSS_HEAD = """
## Loss nodes

A loss's keys are checked when `MODEL.LOSSES.NAME` lists it. [docs/zoo.md](zoo.md) says what each loss does
and where its defaults come from, [docs/losses.md](losses.md) what the EWTH options mean.

"""

_COLUMNS = ("key", "type", "valid", "warned about", "default", "what")


def _cell(text):
    return str(text).replace("|", "\\|")


def _row(cells):
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(rows):
    lines = [_row(_COLUMNS), "|" + "---|" * len(_COLUMNS)]
    return "\n".join(lines + [_row(r) for r in rows]) + "\n"


def _rule_row(rule, defaults):
    default = config_value(defaults, rule.key)
    return ("`{}`".format(rule.key), rule.valid.type_name, rule.valid_text(), rule.unusual_text(),
            "" if default is _MISSING else "`{!r}`".format(default), rule.what)


def _loss_rows(defaults):
    """Rows of the keys of every registered loss, as its checks have them: the registry's ``SCALE`` check and
    the entry's rules, the EWTH option table, the centre loss's check."""
    from ..losses.options import EWTH_OPTIONS
    from ..modeling.center_loss import CENTER_CONFIG_NODE, CENTER_DEFAULTS
    from ..modeling.registry import LOSS_REGISTRY, registered_losses

    def row(key, kind, valid, what):
        return "`{}`".format(key), kind, valid, "", "`{!r}`".format(config_value(defaults, key)), what

    rows = []
    for name in registered_losses():
        entry = LOSS_REGISTRY.get(name)
        if not entry.__module__.startswith(__name__.split(".")[0] + "."):
            continue  # another project's loss, registered in this process: not part of this package's docs
        node = entry.config_node
        if node == "MODEL.LOSSES.EWTH":
            for option in EWTH_OPTIONS:
                kind = "string" if isinstance(option.default, str) else "number"
                rows.append(row(option.config_key, kind, option.allowed, "EWTHLoss, option {}".format(option.name)))
        elif node == CENTER_CONFIG_NODE:
            what = {"SCALE": "the loss weight", "LR": "the learning rate of the centres' own SGD"}
            for key in CENTER_DEFAULTS:
                rows.append(row("{}.{}".format(node, key), "number", "a finite number > 0",
                                "CenterLoss: " + what.get(key, key)))
        else:
            rows.append(row(node + ".SCALE", "number", "a finite number > 0", name + ": the loss weight"))
            for rule in loss_rules(entry):
                rows.append(_rule_row(rule, defaults)[:-1] + ("{}: {}".format(name, rule.what),))
    return rows


def render_config_doc():
    """The text of ``docs/config.md``: :data:`RULES` and the checked keys of every registered loss."""
    from fastreid.config import get_cfg

    from . import add_ewth_config

    defaults = add_ewth_config(get_cfg())
    sections = []
    for title, prefix in (("SOLVER", "SOLVER."), ("DATALOADER", "DATALOADER."), ("INPUT", "INPUT."),
                          ("TEST", "TEST."), ("MODEL", "MODEL."), ("The run", "")):
        rules = [r for r in RULES if r.key.startswith(prefix) and (prefix or "." not in r.key)]
        sections.append("## {}\n\n{}".format(title, _table([_rule_row(r, defaults) for r in rules])))
    return _DOC_HEAD + "\n".join(sections) + _LOSS_HEAD + _table(_loss_rows(defaults))
