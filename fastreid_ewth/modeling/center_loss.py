"""The centre loss of AGW, all of it: its config keys (defaults and check), the ``CenterLoss`` module that
owns the class centres, the hook that steps them with their own optimizer, and ``center_loss_of``.

``MODEL.LOSSES.CENTER.SCALE`` is the loss weight, ``MODEL.LOSSES.CENTER.LR`` the learning rate of the
centres' SGD. :data:`CENTER_DEFAULTS` is the only place their defaults are written; ``add_ewth_config``
copies them into the config and :func:`check_center_value` is the one check, used by the pre-run
validation (:func:`check_center_config`) and by ``CenterLoss`` itself.
"""
import math
import numbers
import types

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fastreid.engine.train_loop import HookBase

from ..losses.center import center_loss
from .registry import LOSS_REGISTRY, ReidLoss, feature_dim

__all__ = [
    "CENTER_CONFIG_NODE", "CENTER_DEFAULTS", "CenterLoss", "CenterLossOptimizer", "center_loss_of",
    "check_center_config", "check_center_value",
]

#: The config node of the centre loss.
CENTER_CONFIG_NODE = "MODEL.LOSSES.CENTER"

#: Config key under :data:`CENTER_CONFIG_NODE` -> default (AGW's: loss weight 0.0005, centre lr 0.5).
CENTER_DEFAULTS = types.MappingProxyType({"SCALE": 0.0005, "LR": 0.5})

# what each key is called outside the config, for the messages
_PYTHON_NAMES = {"SCALE": "CenterLoss(scale=...)", "LR": "the lr of the centres' SGD"}


def check_center_value(key, value):
    """``value`` of ``MODEL.LOSSES.CENTER.<key>`` as a float, or ``ValueError``: it must be finite and > 0."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value) and value > 0
    if not ok:
        raise ValueError("{}.{} is {!r} ({}), but it must be a finite number > 0 (default {}); drop CenterLoss from "
                         "MODEL.LOSSES.NAME to turn it off".format(CENTER_CONFIG_NODE, key, value, _PYTHON_NAMES[key],
                                                                   CENTER_DEFAULTS[key]))
    return float(value)


def check_center_config(cfg):
    """``MODEL.LOSSES.CENTER.{SCALE, LR}`` must be finite and > 0 when CenterLoss is trained.

    Returns ``{key: value}`` of the checked keys.
    """
    node = cfg.MODEL.LOSSES.CENTER
    return {key: check_center_value(key, node[key]) for key in CENTER_DEFAULTS}


def center_config_defaults():
    """Config key (under :data:`CENTER_CONFIG_NODE`) -> default, for ``add_ewth_config``."""
    return dict(CENTER_DEFAULTS)


@LOSS_REGISTRY.register()
class CenterLoss(ReidLoss):
    """Learnable C×D centers and the loss ``scale * mean ||f_i - c_{y_i}||^2`` on the metric feature.

    The centers are not updated by the model's optimizer: ``EWTHTrainer`` hides them from it and steps
    them with their own SGD (``MODEL.LOSSES.CENTER.LR``, :class:`CenterLossOptimizer`) after dividing their
    gradient by ``scale``, as ReID-Survey's AGW does, so that the centers move at the same speed whatever the
    loss weight.
    """

    reads = ("feature", "labels")
    config_node = CENTER_CONFIG_NODE
    defaults = CENTER_DEFAULTS
    terms = ("loss_center",)

    def __init__(self, num_classes, feat_dim, scale=CENTER_DEFAULTS["SCALE"]):
        if num_classes <= 0 or feat_dim <= 0:
            raise ValueError("CenterLoss needs num_classes > 0 and feat_dim > 0, got {} and {}".format(
                num_classes, feat_dim))
        super(ReidLoss, self).__init__()  # its scale has the check of the centre loss's keys
        self.scale = check_center_value("SCALE", scale)
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.MODEL.HEADS.NUM_CLASSES, feature_dim(cfg), check_center_config(cfg)["SCALE"])

    @classmethod
    def check_config(cls, cfg):
        check_center_config(cfg)

    def compute(self, features, targets):
        return center_loss(features, targets, self.centers)

    def extra_repr(self):
        return "num_classes={}, feat_dim={}, scale={}".format(*self.centers.shape, self.scale)


class CenterLossOptimizer(HookBase):
    """Steps the center-loss centers with their own optimizer, as AGW does.

    Before each step the centers' gradient is cleared; after the model's backward it is divided by the
    loss weight (and by the AMP loss scale, when there is one) and the centers' SGD steps. A step whose
    center gradient is not finite (AMP overflow) is skipped, as the grad scaler skips the model's.
    """

    def __init__(self, optimizer, center_loss):
        self.optimizer = optimizer
        self.center_loss = center_loss
        self._amp_scale = 1.0

    @classmethod
    def from_config(cls, cfg, center_loss):
        """The hook with the centres' SGD at ``MODEL.LOSSES.CENTER.LR``."""
        lr = check_center_config(cfg)["LR"]
        return cls(torch.optim.SGD(center_loss.parameters(), lr=lr), center_loss)

    def before_step(self):
        self.optimizer.zero_grad(set_to_none=False)
        scaler = self.trainer.grad_scaler
        self._amp_scale = scaler.get_scale() if scaler is not None else 1.0

    def after_step(self):
        divisor = self.center_loss.scale * self._amp_scale
        grads = [p.grad for p in self.center_loss.parameters() if p.grad is not None]
        if not grads:
            return
        for g in grads:
            g.div_(divisor)
        if all(torch.isfinite(g).all() for g in grads):
            self.optimizer.step()


def center_loss_of(model):
    """The :class:`CenterLoss` of ``model`` (unwrapping ``DistributedDataParallel``), or ``None``."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    return next((m for m in model.modules() if isinstance(m, CenterLoss)), None)
