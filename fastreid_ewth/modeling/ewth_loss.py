"""``EWTHLoss``: reads ``MODEL.LOSSES.EWTH`` and calls :func:`fastreid_ewth.losses.ewth_loss`.

Its options, their defaults and their checks are those of
:data:`fastreid_ewth.losses.options.EWTH_OPTIONS`, the same table ``ewth_loss`` and ``add_ewth_config``
use: the module accepts and refuses exactly what the function does, with the same messages.
"""
from torch import nn

from ..losses import ewth_loss
from ..losses.options import check_ewth_options, ewth_options_from_config

__all__ = ["EWTHLoss"]


class EWTHLoss(nn.Module):
    """The EWTH loss family as a module: ``forward`` returns its named terms, each times ``scale``.

    Attributes:
        options: every option (variant, margins, threshold, norm_feat, scale) as checked, defaults
            filled in; ``forward`` passes them to ``ewth_loss`` unchanged.
    """

    def __init__(self, **options):
        super().__init__()
        self.options = check_ewth_options(**options)

    @classmethod
    def from_config(cls, cfg):
        """The loss ``cfg.MODEL.LOSSES.EWTH`` describes; a bad value raises ``ValueError`` naming its key."""
        return cls(**ewth_options_from_config(cfg.MODEL.LOSSES.EWTH))

    @property
    def scale(self):
        return self.options["scale"]

    def forward(self, features, targets, classifier_weight, diagnostics=False):
        """features: N×D pre-BNNeck; classifier_weight: C×D (detached inside the loss).

        Returns the dict of terms, or with ``diagnostics`` the pair ``(terms, diagnostics)`` of
        :func:`~fastreid_ewth.losses.ewth_loss`: the batch's mining diagnostics from this very forward.
        """
        return ewth_loss(features, targets, classifier_weight, diagnostics=diagnostics, **self.options)

    def extra_repr(self):
        return ", ".join("{}={!r}".format(k, v) for k, v in self.options.items())
