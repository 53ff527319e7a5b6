"""``CenterLoss`` module: owns the class centers; the trainer gives them their own optimizer."""
import torch
from torch import nn

from ..losses.center import center_loss

__all__ = ["CenterLoss", "check_center_config"]


def check_center_config(cfg):
    """``MODEL.LOSSES.CENTER.{SCALE, LR}`` must be > 0 when CenterLoss is trained."""
    c = cfg.MODEL.LOSSES.CENTER
    if c.SCALE <= 0 or c.LR <= 0:
        raise ValueError("MODEL.LOSSES.CENTER.SCALE ({}) and MODEL.LOSSES.CENTER.LR ({}) must be > 0; drop "
                         "CenterLoss from MODEL.LOSSES.NAME to turn it off".format(c.SCALE, c.LR))


class CenterLoss(nn.Module):
    """Learnable C×D centers and the loss ``scale * mean ||f_i - c_{y_i}||^2``.

    The centers are not updated by the model's optimizer: ``EWTHTrainer`` hides them from it and steps
    them with their own SGD (``MODEL.LOSSES.CENTER.LR``) after dividing their gradient by ``scale``, as
    ReID-Survey's AGW does, so that the centers move at the same speed whatever the loss weight.
    """

    def __init__(self, num_classes, feat_dim, scale=0.0005):
        super().__init__()
        if num_classes <= 0 or feat_dim <= 0:
            raise ValueError("CenterLoss needs num_classes > 0 and feat_dim > 0, got {} and {}".format(
                num_classes, feat_dim))
        self.scale = float(scale)
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features, targets):
        return center_loss(features, targets, self.centers) * self.scale

    def extra_repr(self):
        return "num_classes={}, feat_dim={}, scale={}".format(*self.centers.shape, self.scale)
