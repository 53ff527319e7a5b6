"""``EWTHLoss``: reads ``MODEL.LOSSES.EWTH`` and calls :func:`fastreid_ewth.losses.ewth_loss`."""
from torch import nn

from ..losses import EWTH_VARIANTS, NORM_FEATS, ewth_loss

__all__ = ["EWTHLoss"]


class EWTHLoss(nn.Module):
    """The EWTH loss family as a module: ``forward`` returns its named terms, each times ``scale``."""

    def __init__(self, variant="HNEWTH", margin=0.3, mean_neg_margin=0.3, ew_margin=0.3, ew_threshold=0.1,
                 norm_feat="none", scale=1.0):
        super().__init__()
        if variant not in EWTH_VARIANTS:
            raise ValueError("MODEL.LOSSES.EWTH.VARIANT {!r} is not a variant; choose one of {}".format(
                variant, ", ".join(EWTH_VARIANTS)))
        if norm_feat not in NORM_FEATS:
            raise ValueError("MODEL.LOSSES.EWTH.NORM_FEAT {!r} is unknown; choose one of {}".format(
                norm_feat, ", ".join(NORM_FEATS)))
        if not 0.0 <= ew_threshold < 1.0:
            raise ValueError("MODEL.LOSSES.EWTH.EW_THRESHOLD {} must lie in [0, 1): it is compared with weight "
                             "differences normalised by their maximum (the paper uses 0.1)".format(ew_threshold))
        if margin > 0:  # hinge terms; MARGIN <= 0 selects the soft margin for every term
            for key, value in (("MEAN_NEG_MARGIN", mean_neg_margin), ("EW_MARGIN", ew_margin)):
                if value < 0:
                    raise ValueError("MODEL.LOSSES.EWTH.{} is {}: a negative hinge margin is not allowed. Use a "
                                     "margin >= 0 (the paper uses 0.3), or MARGIN 0 for the soft margin on every "
                                     "term".format(key, value))
        if scale < 0:
            raise ValueError("MODEL.LOSSES.EWTH.SCALE {} must be >= 0".format(scale))
        self.kwargs = dict(variant=variant, margin=margin, mean_neg_margin=mean_neg_margin, ew_margin=ew_margin,
                           ew_threshold=ew_threshold, norm_feat=norm_feat)
        self.scale = float(scale)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.LOSSES.EWTH
        return cls(variant=c.VARIANT, margin=c.MARGIN, mean_neg_margin=c.MEAN_NEG_MARGIN, ew_margin=c.EW_MARGIN,
                   ew_threshold=c.EW_THRESHOLD, norm_feat=c.NORM_FEAT, scale=c.SCALE)

    def forward(self, features, targets, classifier_weight):
        """features: N×D pre-BNNeck; classifier_weight: C×D (detached inside the loss)."""
        terms = ewth_loss(features, targets, classifier_weight, **self.kwargs)
        return {name: value * self.scale for name, value in terms.items()}

    def extra_repr(self):
        return ", ".join("{}={!r}".format(k, v) for k, v in self.kwargs.items()) + ", scale={}".format(self.scale)
