"""``LOSS_REGISTRY``: every loss ``EWTHBaseline`` trains, by the name written in ``MODEL.LOSSES.NAME``.

An entry is a subclass of :class:`ReidLoss` registered with ``@LOSS_REGISTRY.register()`` (fastreid's
``Registry``, the type of its ``META_ARCH_REGISTRY``). It declares:

- ``reads``: which training outputs it takes, in the order ``forward`` takes them, from :data:`INPUTS`;
- ``config_node`` and ``defaults``: its config node (e.g. ``MODEL.LOSSES.TRI``) and ``{KEY: default}``,
  ``SCALE`` (the loss weight) among them. ``add_ewth_config`` adds every registered entry's node, so the
  keys can be set in YAML and on the command line;
- ``terms``: the names its terms are logged under (``loss_<something>``), each the loss times ``SCALE``;
- ``identity_batches``: whether it compares images of the batch with each other, which needs P×K batches;
- ``rules``: the valid values of its other keys, as :class:`fastreid_ewth.config.schema.Rule` objects with keys
  relative to ``config_node`` (``docs/config.md`` lists them); ``check_config`` applies them before a run.

``EWTHBaseline`` builds the listed entries from the config and sums their terms; a name that is not
registered is refused with the list of those that are. Another project adds its own::

    from fastreid_ewth import LOSS_REGISTRY, ReidLoss
    from fastreid_ewth.config.schema import Number, Rule

    @LOSS_REGISTRY.register()
    class MyLoss(ReidLoss):
        reads = ("feature", "labels")
        config_node = "MODEL.LOSSES.MY"
        defaults = {"SCALE": 1.0, "MARGIN": 0.2}
        rules = (Rule("MARGIN", Number(lo=0), "the hinge margin", "set e.g. MODEL.LOSSES.MY.MARGIN 0.2"),)
        terms = ("loss_my",)
        identity_batches = True

        def __init__(self, scale=1.0, margin=0.2):
            super().__init__(scale)
            self.margin = margin

        def compute(self, feature, labels):
            ...  # a scalar tensor

and trains it with ``MODEL.LOSSES.NAME ("CrossEntropyLoss", "MyLoss")`` once its module is imported
before the config is built.
"""
import logging
import math
import numbers

import torch
from torch import nn

from fastreid.utils.registry import Registry

from .. import compat

logger = logging.getLogger(__name__)

__all__ = ["LOSS_REGISTRY", "INPUTS", "ReidLoss", "registered_losses", "loss_entry", "build_loss_modules",
           "add_loss_configs", "check_loss_configs", "feature_dim", "renamed_terms"]

LOSS_REGISTRY = Registry("LOSS")
LOSS_REGISTRY.__doc__ = "Losses of EWTHBaseline, by their MODEL.LOSSES.NAME; entries subclass ReidLoss."

#: What an entry may read, and which key of the head's training output holds it.
INPUTS = {
    # the training feature of the metric losses, fastreid's MODEL.HEADS.NECK_FEAT: the pre-BNNeck feature
    # with 'before' (BoT, AGW), the after-BNNeck one with 'after' (fastreid's SBS)
    "feature": "features",
    "pre_bn": "pre_bn_features",  # pooled (and embedded) feature before the BNNeck
    "after_bn": "after_bn_features",  # after the BNNeck: the classifier's input and the test feature
    "logits": "cls_outputs",  # the classification layer's output (MODEL.HEADS.CLS_LAYER, margins included)
    "classifier_weight": "classifier_weight",  # the head's C×D classifier weight
    "labels": None,  # the batch's identity labels (not a head output)
}

# what fastreid's own EmbeddingHead returns in training
_FASTREID_HEAD_OUTPUTS = ("features", "cls_outputs", "pred_class_logits")


class ReidLoss(nn.Module):
    """Base of the registry's entries: ``forward(*reads)`` returns ``{term: value × SCALE}``.

    Subclasses set the class attributes below and implement ``compute(*reads)``, returning one scalar
    tensor (logged as ``terms[0]``) or a dict of scalar tensors keyed by ``terms``; the base class applies
    ``SCALE``. ``from_config`` passes every key of ``defaults`` lower-cased to ``__init__``, plus
    ``num_classes`` and ``feat_dim`` to entries that set ``needs_shape`` (those with learnable weights,
    which live in this module and so in the model, its optimizer, its checkpoints and DDP).
    """

    reads = ()
    config_node = None
    defaults = {"SCALE": 1.0}
    terms = ()
    identity_batches = False
    needs_shape = False
    rules = ()

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = check_scale(type(self), scale)

    @classmethod
    def hyper_parameters(cls, cfg):
        """``{argument: value}`` of this entry's config node (every key of ``defaults``, lower-cased)."""
        node = config_node_of(cfg, cls)
        return {key.lower(): node[key] for key in cls.defaults}

    @classmethod
    def from_config(cls, cfg):
        kwargs = cls.hyper_parameters(cfg)
        if cls.needs_shape:
            kwargs["num_classes"] = cfg.MODEL.HEADS.NUM_CLASSES
            kwargs["feat_dim"] = feature_dim(cfg)
        return cls(**kwargs)

    @classmethod
    def check_config(cls, cfg):
        """Raise ``ValueError`` naming the key when the config node holds a bad value (before a run): its
        ``SCALE``, then every key of ``rules`` (all refused values at once)."""
        check_scale(cls, config_node_of(cfg, cls)["SCALE"])
        if cls.rules:
            # imported here: the config package imports the registry to add the loss nodes
            from ..config.schema import check_rules, loss_rules

            check_rules(cfg, loss_rules(cls))

    def compute(self, *inputs):
        raise NotImplementedError("{} must implement compute({})".format(type(self).__name__, ", ".join(self.reads)))

    def forward(self, *inputs):
        value = self.compute(*inputs)
        if not isinstance(value, dict):
            value = {self.terms[0]: value}
        if self.scale == 1.0:  # x * 1.0 is x: spare the autograd graph a node per term
            return value
        return {name: term * self.scale for name, term in value.items()}

    def training_terms(self, *inputs):
        """What ``EWTHBaseline`` calls during training; entries that log more than their terms override it."""
        return self(*inputs)

    def extra_repr(self):
        return "scale={}".format(self.scale)


def check_scale(entry, scale):
    ok = not isinstance(scale, bool) and isinstance(scale, numbers.Real) and math.isfinite(scale) and scale > 0
    if not ok:
        raise ValueError("{}.SCALE is {!r}, but the weight of {} must be a finite number > 0; drop {} from "
                         "MODEL.LOSSES.NAME to turn it off".format(entry.config_node, scale, entry.__name__,
                                                                   entry.__name__))
    return float(scale)


def registered_losses():
    """Names of every registered loss, sorted."""
    return compat.registry_names(LOSS_REGISTRY)


def loss_entry(name):
    """The registered class of ``name``, or ``ValueError`` listing the registered names."""
    try:
        return LOSS_REGISTRY.get(name)
    except KeyError:
        raise ValueError("MODEL.LOSSES.NAME: {!r} is not a registered loss; registered losses: {}. A loss of your "
                         "own is added with @fastreid_ewth.LOSS_REGISTRY.register() (docs/losses.md)".format(
                             name, ", ".join(registered_losses()))) from None


def config_node_of(cfg, entry):
    """``cfg``'s node ``entry.config_node`` (e.g. ``cfg.MODEL.LOSSES.TRI``)."""
    node = cfg
    for part in str(entry.config_node).split("."):
        if not hasattr(node, "keys") or part not in node:
            raise ValueError("{} has no config node {} in this config: build the config after importing the module "
                             "that registers {} (add_ewth_config adds the nodes of the registered losses)".format(
                                 entry.__name__, entry.config_node, entry.__name__))
        node = node[part]
    return node


def feature_dim(cfg):
    """Width of the head's features: ``MODEL.HEADS.EMBEDDING_DIM`` when set, else the backbone's."""
    return cfg.MODEL.HEADS.EMBEDDING_DIM or cfg.MODEL.BACKBONE.FEAT_DIM


def _listed(cfg):
    names = tuple(cfg.MODEL.LOSSES.NAME)
    if not names:
        raise ValueError("MODEL.LOSSES.NAME is empty; list at least one loss, e.g. MODEL.LOSSES.NAME "
                         "'(\"CrossEntropyLoss\", \"TripletLoss\")'. Registered losses: {}".format(
                             ", ".join(registered_losses())))
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError("MODEL.LOSSES.NAME {} lists {} twice; each loss has one config node, list it once "
                         "and set its SCALE instead".format(names, ", ".join(repeated)))
    return [(name, loss_entry(name)) for name in names]


def check_loss_configs(cfg):
    """Check ``MODEL.LOSSES.NAME`` and the config node of every listed loss -> ``[(name, entry class)]``."""
    entries = _listed(cfg)
    for _, entry in entries:
        entry.check_config(cfg)
    return entries


def renamed_terms(entries):
    """``{entry name: {term: logged name}}``: a term two listed losses share is logged as ``<term>_<Name>``."""
    seen = {}
    for name, entry in entries:
        for term in entry.terms:
            seen.setdefault(term, []).append(name)
    renames = {}
    for name, entry in entries:
        renames[name] = {term: "{}_{}".format(term, name) if len(seen[term]) > 1 else term for term in entry.terms}
    clashes = {t: n for t, n in seen.items() if len(n) > 1}
    if clashes:
        logger.warning("MODEL.LOSSES.NAME: %s compute a term of the same name; each is logged as <term>_<loss>",
                       "; ".join("{} ({})".format(", ".join(n), t) for t, n in clashes.items()))
    return renames


def build_loss_modules(cfg, head_outputs=None):
    """``nn.ModuleDict`` ``{name: entry}`` of the losses ``MODEL.LOSSES.NAME`` lists, in its order.

    ``head_outputs``: the keys the head returns in training; an entry reading what the head does not
    give is refused here, before training starts.
    """
    entries = check_loss_configs(cfg)
    outputs = _FASTREID_HEAD_OUTPUTS if head_outputs is None else tuple(head_outputs)
    for name, entry in entries:
        for what in entry.reads:
            if what not in INPUTS:
                raise ValueError("{} reads {!r}, which is not one of {}".format(name, what, ", ".join(INPUTS)))
            key = INPUTS[what]
            if key is not None and key not in outputs:
                raise ValueError("MODEL.LOSSES.NAME: {} reads the {} ({!r}), which the head MODEL.HEADS.NAME {!r} "
                                 "does not return in training; set MODEL.HEADS.NAME EWTHEmbeddingHead".format(
                                     name, what, key, cfg.MODEL.HEADS.NAME))
    return nn.ModuleDict((name, entry.from_config(cfg)) for name, entry in entries)


def add_loss_configs(cfg):
    """Add the config node of every registered loss to ``cfg`` (missing keys only; fastreid's own nodes,
    such as ``MODEL.LOSSES.TRI``, keep fastreid's defaults)."""
    from fastreid.config import CfgNode

    for entry in (LOSS_REGISTRY.get(name) for name in registered_losses()):
        if entry.config_node is None or not entry.config_node.startswith("MODEL.LOSSES."):
            raise ValueError("{}.config_node must be a node under MODEL.LOSSES, e.g. 'MODEL.LOSSES.{}', got "
                             "{!r}".format(entry.__name__, entry.__name__.upper(), entry.config_node))
        if "SCALE" not in entry.defaults:
            raise ValueError("{}.defaults must have SCALE, the loss weight".format(entry.__name__))
        node = cfg.MODEL
        for part in entry.config_node.split(".")[1:]:
            if part not in node:
                node[part] = CfgNode()
            node = node[part]
        for key, value in entry.defaults.items():
            if key not in node:
                node[key] = value
    return cfg


def gather_inputs(entry, outputs, labels):
    """The tensors ``entry.reads`` names, from the head's training ``outputs`` and the batch's ``labels``."""
    values = []
    for what in entry.reads:
        key = INPUTS[what]
        values.append(labels if key is None else outputs[key])
    return values

