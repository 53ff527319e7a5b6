"""pytorch-metric-learning's losses as entries of ``LOSS_REGISTRY``.

The loss objects are pytorch-metric-learning's own; what this module adds is what training them inside a
fastreid model needs, which the library leaves to its user:

- **Precision.** They run in fp32 with autocast off. Under AMP the features arrive in fp16, and the
  classification losses would then cast their weight matrix to fp16 in place (``W.data = W.data.half()``),
  which detaches it from the contiguous buffer fastreid's ``ContiguousParams`` optimizes.
- **Where weights live.** The classification losses (SphereFace, CosFace, ArcFace) own their class-weight
  matrix; as a submodule of the entry it is a parameter of the model, so fastreid's optimizer, checkpointer
  and DDP see it.
- **Units.** ``MODEL.LOSSES.ARCFACE.MARGIN`` is in radians, as fastreid's ``ArcSoftmax`` margin
  (``MODEL.HEADS.MARGIN``); pytorch-metric-learning takes degrees, so it is converted here.
- **Which feature.** The metric losses read the training metric feature (``MODEL.HEADS.NECK_FEAT``), the
  classification losses the classifier's input, the after-BNNeck feature (the pooled feature without BNNeck).

Defaults are pytorch-metric-learning's, which follow each loss's paper, except where ``docs/losses.md``
says otherwise.
"""
import math
import numbers

from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from ..losses.autocast import autocast_disabled
from .registry import LOSS_REGISTRY, ReidLoss, config_node_of

__all__ = ["NPairsLoss", "HistogramLoss", "MultiSimilarityLoss", "ContrastiveLoss", "SphereFaceLoss",
           "CosFaceLoss", "ArcFaceLoss"]


def _check(entry, cfg, key, ok, what):
    value = config_node_of(cfg, entry)[key]
    real = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if not (real and ok(value)):
        raise ValueError("{}.{} is {!r}, but it must be {} (default {})".format(
            entry.config_node, key, value, what, entry.defaults[key]))


class _LibraryLoss(ReidLoss):
    """An entry whose ``self.loss`` is a pytorch-metric-learning loss, called in fp32 outside autocast."""

    reads = ("feature", "labels")
    identity_batches = True

    def compute(self, feature, labels):
        with autocast_disabled(feature.device.type):
            feature = feature.float()
            # a submodule lives in nn.Module's _modules: a class attribute of the same name would shadow it
            miner = getattr(self, "miner", None)
            if miner is not None:
                return self.loss(feature, labels, miner(feature, labels))
            return self.loss(feature, labels)


@LOSS_REGISTRY.register()
class NPairsLoss(_LibraryLoss):
    """N-pair loss (Sohn 2016): for one anchor-positive pair per identity, softmax over the other pairs."""

    config_node = "MODEL.LOSSES.NPAIRS"
    defaults = {"SCALE": 1.0}
    terms = ("loss_npairs",)

    def __init__(self, scale=1.0):
        super().__init__(scale)
        self.loss = pml_losses.NPairsLoss()


@LOSS_REGISTRY.register()
class HistogramLoss(_LibraryLoss):
    """Histogram loss (Ustinova & Lempitsky 2016): overlap of the positive and negative cosine-similarity
    histograms, ``N_BINS`` bins over [-1, 1]."""

    config_node = "MODEL.LOSSES.HISTOGRAM"
    defaults = {"N_BINS": 100, "SCALE": 1.0}
    terms = ("loss_histogram",)

    def __init__(self, scale=1.0, n_bins=100):
        super().__init__(scale)
        self.loss = pml_losses.HistogramLoss(n_bins=int(n_bins))

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        _check(cls, cfg, "N_BINS", lambda v: v == int(v) and v >= 2, "an integer >= 2")


@LOSS_REGISTRY.register()
class MultiSimilarityLoss(_LibraryLoss):
    """Multi-similarity loss (Wang et al. 2019) on the pairs its miner keeps: ``ALPHA``, ``BETA``, ``BASE``
    (λ) of the loss, ``EPSILON`` of the miner."""

    config_node = "MODEL.LOSSES.MS"
    defaults = {"ALPHA": 2.0, "BETA": 50.0, "BASE": 0.5, "EPSILON": 0.1, "SCALE": 1.0}
    terms = ("loss_ms",)

    def __init__(self, scale=1.0, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1):
        super().__init__(scale)
        self.loss = pml_losses.MultiSimilarityLoss(alpha=float(alpha), beta=float(beta), base=float(base))
        self.miner = pml_miners.MultiSimilarityMiner(epsilon=float(epsilon))

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        for key in ("ALPHA", "BETA"):
            _check(cls, cfg, key, lambda v: v > 0, "a number > 0")
        _check(cls, cfg, "BASE", lambda v: -1 <= v <= 1, "a cosine similarity in [-1, 1]")
        _check(cls, cfg, "EPSILON", lambda v: v >= 0, "a number >= 0")


@LOSS_REGISTRY.register()
class ContrastiveLoss(_LibraryLoss):
    """Contrastive loss (Hadsell et al. 2006) on L2-normalised features: positive pairs pulled within
    ``POS_MARGIN``, negative pairs pushed beyond ``NEG_MARGIN`` (Euclidean distances, in [0, 2])."""

    config_node = "MODEL.LOSSES.CONTRASTIVE"
    defaults = {"POS_MARGIN": 0.0, "NEG_MARGIN": 1.0, "SCALE": 1.0}
    terms = ("loss_contrastive",)

    def __init__(self, scale=1.0, pos_margin=0.0, neg_margin=1.0):
        super().__init__(scale)
        self.loss = pml_losses.ContrastiveLoss(pos_margin=float(pos_margin), neg_margin=float(neg_margin))

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        node = config_node_of(cfg, cls)
        _check(cls, cfg, "POS_MARGIN", lambda v: 0 <= v <= 2, "a distance in [0, 2]")
        _check(cls, cfg, "NEG_MARGIN", lambda v: node["POS_MARGIN"] < v <= 2,
               "a distance in ({}.POS_MARGIN, 2]".format(cls.config_node))


class _ClassifierLoss(_LibraryLoss):
    """A margin softmax with its own C×D weight, on the after-BNNeck feature."""

    reads = ("after_bn", "labels")
    identity_batches = False
    needs_shape = True
    library_class = None

    def __init__(self, num_classes, feat_dim, scale=1.0, margin=0.0, logit_scale=1.0):
        super().__init__(scale)
        if num_classes <= 0 or feat_dim <= 0:
            raise ValueError("{} needs MODEL.HEADS.NUM_CLASSES > 0 and a feature width > 0, got {} and {}".format(
                type(self).__name__, num_classes, feat_dim))
        self.margin = margin
        self.logit_scale = float(logit_scale)
        self.loss = type(self).library_class(num_classes=num_classes, embedding_size=feat_dim,
                                             margin=self.library_margin(margin), scale=self.logit_scale)

    @staticmethod
    def library_margin(margin):
        return float(margin)

    @property
    def weight(self):
        """The D×C class weights (pytorch-metric-learning's layout: one column per identity)."""
        return self.loss.W

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        _check(cls, cfg, "LOGIT_SCALE", lambda v: v > 0, "a number > 0")

    def extra_repr(self):
        return "scale={}, margin={}, logit_scale={}".format(self.scale, self.margin, self.logit_scale)


@LOSS_REGISTRY.register()
class SphereFaceLoss(_ClassifierLoss):
    """A-softmax (SphereFace, Liu et al. 2017): multiplicative angular margin ``MARGIN`` (an integer;
    1 is no margin) on normalised class weights."""

    config_node = "MODEL.LOSSES.SPHEREFACE"
    defaults = {"MARGIN": 4, "LOGIT_SCALE": 1.0, "SCALE": 1.0}
    terms = ("loss_sphereface",)
    library_class = pml_losses.SphereFaceLoss

    def __init__(self, num_classes, feat_dim, scale=1.0, margin=4, logit_scale=1.0):
        super().__init__(num_classes, feat_dim, scale, int(margin), logit_scale)

    @staticmethod
    def library_margin(margin):
        return int(margin)

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        _check(cls, cfg, "MARGIN", lambda v: v == int(v) and v >= 1, "an integer >= 1 (1: no margin)")


@LOSS_REGISTRY.register()
class CosFaceLoss(_ClassifierLoss):
    """Large-margin cosine loss (CosFace, Wang et al. 2018) with its own classifier: additive cosine
    margin ``MARGIN``, logit scale ``LOGIT_SCALE``. (``Cosface`` is fastreid's pairwise form.)"""

    config_node = "MODEL.LOSSES.COSFACE_CLS"
    defaults = {"MARGIN": 0.35, "LOGIT_SCALE": 64.0, "SCALE": 1.0}
    terms = ("loss_cosface_cls",)
    library_class = pml_losses.CosFaceLoss

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        _check(cls, cfg, "MARGIN", lambda v: 0 <= v < 1, "a cosine margin in [0, 1)")


@LOSS_REGISTRY.register()
class ArcFaceLoss(_ClassifierLoss):
    """Additive angular margin loss (ArcFace, Deng et al. 2019) with its own classifier: margin ``MARGIN``
    in radians (as fastreid's ArcSoftmax; converted to the degrees pytorch-metric-learning takes), logit
    scale ``LOGIT_SCALE``."""

    config_node = "MODEL.LOSSES.ARCFACE"
    defaults = {"MARGIN": 0.5, "LOGIT_SCALE": 64.0, "SCALE": 1.0}
    terms = ("loss_arcface",)
    library_class = pml_losses.ArcFaceLoss

    @staticmethod
    def library_margin(margin):
        return math.degrees(float(margin))

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        _check(cls, cfg, "MARGIN", lambda v: 0 <= v < math.pi / 2, "an angle in radians in [0, pi/2)")
