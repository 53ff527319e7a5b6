"""fastreid's own losses as entries of ``LOSS_REGISTRY``, under fastreid's names and config nodes.

Each calls the function of ``fastreid.modeling.losses`` unchanged, so a config written for fastreid's
``Baseline`` (``MODEL.LOSSES.TRI.MARGIN`` and the like) means the same here; the defaults are fastreid's.
``FocalLoss`` is fastreid's ``focal_loss``, which fastreid's ``Baseline`` cannot select.

The margin classifiers (CosFace, ArcFace, Circle on the classifier) are not losses here but fastreid's
classification layers, ``MODEL.HEADS.CLS_LAYER`` ``CosSoftmax`` / ``ArcSoftmax`` / ``CircleSoftmax``
(margin ``MODEL.HEADS.MARGIN``, in radians for ArcSoftmax; scale ``MODEL.HEADS.SCALE``), trained with
``CrossEntropyLoss`` on their logits.

The ``rules`` of each entry are the values fastreid's functions are meant for (docs/config.md).
"""
from fastreid.modeling.losses import cross_entropy_loss, focal_loss, pairwise_circleloss, pairwise_cosface, triplet_loss

from ..config.schema import Flag, Number, Rule
from .registry import LOSS_REGISTRY, ReidLoss

__all__ = ["CrossEntropyLoss", "FocalLoss", "TripletLoss", "CircleLoss", "Cosface"]


@LOSS_REGISTRY.register()
class CrossEntropyLoss(ReidLoss):
    """Softmax cross-entropy on the classification layer's logits, with label smoothing ``EPSILON``
    (0: none; -1: fastreid's adaptive smoothing with ``ALPHA``)."""

    reads = ("logits", "labels")
    config_node = "MODEL.LOSSES.CE"
    defaults = {"EPSILON": 0.0, "ALPHA": 0.2, "SCALE": 1.0}
    terms = ("loss_cls",)
    rules = (
        # fastreid smooths adaptively for any negative value; -1 is the one it documents
        Rule("EPSILON", Number(lo=-1, hi=1, hi_open=True), "label smoothing: 0 none, 0.1 BoT, -1 fastreid's "
             "adaptive smoothing with ALPHA", "set e.g. MODEL.LOSSES.CE.EPSILON 0.1",
             unusual=Number(lo=-1, hi=0, lo_open=True, hi_open=True),
             why="every negative value means adaptive smoothing, as -1 does"),
        Rule("ALPHA", Number(lo=0, hi=1), "the adaptive smoothing's share of the target's probability",
             "set e.g. MODEL.LOSSES.CE.ALPHA 0.2"),
    )

    def __init__(self, scale=1.0, epsilon=0.0, alpha=0.2):
        super().__init__(scale)
        self.epsilon = float(epsilon)
        self.alpha = float(alpha)

    def compute(self, logits, labels):
        return cross_entropy_loss(logits, labels, self.epsilon, self.alpha)

    def extra_repr(self):
        return "scale={}, epsilon={}, alpha={}".format(self.scale, self.epsilon, self.alpha)


@LOSS_REGISTRY.register()
class FocalLoss(ReidLoss):
    """Focal loss (Lin et al. 2017) on the logits: ``-ALPHA (1 - p_y)^GAMMA log p_y``, batch mean."""

    reads = ("logits", "labels")
    config_node = "MODEL.LOSSES.FL"
    defaults = {"ALPHA": 0.25, "GAMMA": 2, "SCALE": 1.0}
    terms = ("loss_focal",)
    rules = (
        Rule("ALPHA", Number(lo=0, hi=1), "the weighting factor", "set e.g. MODEL.LOSSES.FL.ALPHA 0.25"),
        Rule("GAMMA", Number(lo=0), "the focusing parameter (0: cross-entropy)", "set e.g. MODEL.LOSSES.FL.GAMMA 2"),
    )

    def __init__(self, scale=1.0, alpha=0.25, gamma=2):
        super().__init__(scale)
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def compute(self, logits, labels):
        return focal_loss(logits, labels, self.alpha, self.gamma)

    def extra_repr(self):
        return "scale={}, alpha={}, gamma={}".format(self.scale, self.alpha, self.gamma)


@LOSS_REGISTRY.register()
class TripletLoss(ReidLoss):
    """Triplet loss with batch-hard mining (``HARD_MINING``) or fastreid's soft-weighted mining,
    margin ``MARGIN`` (<= 0: soft margin), on Euclidean or, with ``NORM_FEAT``, cosine distances."""

    reads = ("feature", "labels")
    config_node = "MODEL.LOSSES.TRI"
    defaults = {"MARGIN": 0.3, "NORM_FEAT": False, "HARD_MINING": False, "SCALE": 1.0}
    terms = ("loss_triplet",)
    identity_batches = True
    rules = (
        Rule("MARGIN", Number(), "the hinge margin; <= 0 selects the soft margin", "set e.g. MODEL.LOSSES.TRI.MARGIN "
             "0.3, or 0 for the soft margin", unusual=Number(hi=0, hi_open=True),
             why="every margin <= 0 selects the soft margin, as 0 does"),
        Rule("NORM_FEAT", Flag(), "cosine instead of Euclidean distances", "write True or False"),
        Rule("HARD_MINING", Flag(), "batch-hard mining (else fastreid's soft weighting)", "write True or False"),
    )

    def __init__(self, scale=1.0, margin=0.3, norm_feat=False, hard_mining=False):
        super().__init__(scale)
        self.margin = float(margin)
        self.norm_feat = bool(norm_feat)
        self.hard_mining = bool(hard_mining)

    def compute(self, feature, labels):
        return triplet_loss(feature, labels, self.margin, self.norm_feat, self.hard_mining)

    def extra_repr(self):
        return "scale={}, margin={}, norm_feat={}, hard_mining={}".format(
            self.scale, self.margin, self.norm_feat, self.hard_mining)


class _PairwiseLoss(ReidLoss):
    reads = ("feature", "labels")
    defaults = {"MARGIN": 0.25, "GAMMA": 128, "SCALE": 1.0}
    identity_batches = True
    function = None
    rules = (
        Rule("MARGIN", Number(lo=0, hi=1, hi_open=True), "the margin on cosine similarities",
             "use 0.25 (fastreid's default)"),
        Rule("GAMMA", Number(lo=0, lo_open=True), "the scale of the similarities", "use 128 (fastreid's default)"),
    )

    def __init__(self, scale=1.0, margin=0.25, gamma=128):
        super().__init__(scale)
        self.margin = float(margin)
        self.gamma = float(gamma)

    def compute(self, feature, labels):
        return type(self).function(feature, labels, self.margin, self.gamma)

    def extra_repr(self):
        return "scale={}, margin={}, gamma={}".format(self.scale, self.margin, self.gamma)


@LOSS_REGISTRY.register()
class CircleLoss(_PairwiseLoss):
    """Pairwise circle loss (Sun et al. 2020) on cosine similarities of the batch: margin ``MARGIN``,
    scale ``GAMMA``."""

    config_node = "MODEL.LOSSES.CIRCLE"
    terms = ("loss_circle",)
    function = staticmethod(pairwise_circleloss)


@LOSS_REGISTRY.register()
class Cosface(_PairwiseLoss):
    """Pairwise CosFace: the large-margin cosine loss over the batch's pairs, margin ``MARGIN``, scale ``GAMMA``."""

    config_node = "MODEL.LOSSES.COSFACE"
    terms = ("loss_cosface",)
    function = staticmethod(pairwise_cosface)
