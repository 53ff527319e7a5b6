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

from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from ..config.schema import Named, Number, Ref, Rule
from ..losses.autocast import autocast_disabled
from .registry import LOSS_REGISTRY, ReidLoss

__all__ = ["NPairsLoss", "HistogramLoss", "MultiSimilarityLoss", "ContrastiveLoss", "SphereFaceLoss",
           "CosFaceLoss", "ArcFaceLoss"]


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
    rules = (Rule("N_BINS", Number(lo=2, integer=True), "bins of the similarity histograms over [-1, 1]",
                  "use 100 (pytorch-metric-learning's default)"),)

    def __init__(self, scale=1.0, n_bins=100):
        super().__init__(scale)
        self.loss = pml_losses.HistogramLoss(n_bins=int(n_bins))


@LOSS_REGISTRY.register()
class MultiSimilarityLoss(_LibraryLoss):
    """Multi-similarity loss (Wang et al. 2019) on the pairs its miner keeps: ``ALPHA``, ``BETA``, ``BASE``
    (λ) of the loss, ``EPSILON`` of the miner."""

    config_node = "MODEL.LOSSES.MS"
    defaults = {"ALPHA": 2.0, "BETA": 50.0, "BASE": 0.5, "EPSILON": 0.1, "SCALE": 1.0}
    terms = ("loss_ms",)
    rules = (
        Rule("ALPHA", Number(lo=0, lo_open=True), "the weight of the positive pairs", "use 2.0 (the default)"),
        Rule("BETA", Number(lo=0, lo_open=True), "the weight of the negative pairs", "use 50.0 (the default)"),
        Rule("BASE", Number(lo=-1, hi=1), "λ, a cosine similarity", "use 0.5 (the default)"),
        Rule("EPSILON", Number(lo=0), "the miner's similarity margin", "use 0.1 (the default)"),
    )

    def __init__(self, scale=1.0, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1):
        super().__init__(scale)
        self.loss = pml_losses.MultiSimilarityLoss(alpha=float(alpha), beta=float(beta), base=float(base))
        self.miner = pml_miners.MultiSimilarityMiner(epsilon=float(epsilon))


@LOSS_REGISTRY.register()
class ContrastiveLoss(_LibraryLoss):
    """Contrastive loss (Hadsell et al. 2006) on L2-normalised features: positive pairs pulled within
    ``POS_MARGIN``, negative pairs pushed beyond ``NEG_MARGIN`` (Euclidean distances, in [0, 2])."""

    config_node = "MODEL.LOSSES.CONTRASTIVE"
    defaults = {"POS_MARGIN": 0.0, "NEG_MARGIN": 1.0, "SCALE": 1.0}
    terms = ("loss_contrastive",)
    # distances between L2-normalised features lie in [0, 2]
    rules = (
        Rule("POS_MARGIN", Number(lo=0, hi=2), "positive pairs are pulled within this distance",
             "use 0.0 (the default)"),
        Rule("NEG_MARGIN", Number(lo=Ref("POS_MARGIN"), hi=2, lo_open=True), "negative pairs are pushed beyond "
             "this distance", "use 1.0 (the default), above POS_MARGIN"),
    )

    def __init__(self, scale=1.0, pos_margin=0.0, neg_margin=1.0):
        super().__init__(scale)
        self.loss = pml_losses.ContrastiveLoss(pos_margin=float(pos_margin), neg_margin=float(neg_margin))


class _ClassifierLoss(_LibraryLoss):
    """A margin softmax with its own C×D weight, on the after-BNNeck feature."""

    reads = ("after_bn", "labels")
    identity_batches = False
    needs_shape = True
    library_class = None
    rules = (Rule("LOGIT_SCALE", Number(lo=0, lo_open=True), "the scale of the logits", "use 64 for CosFace and "
                  "ArcFace, 1 for SphereFace (the papers' values)"),)

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
    rules = _ClassifierLoss.rules + (
        Rule("MARGIN", Number(lo=1, integer=True), "the multiplicative angular margin (1: no margin)",
             "use 4 (the SphereFace paper's)"),)

    def __init__(self, num_classes, feat_dim, scale=1.0, margin=4, logit_scale=1.0):
        super().__init__(num_classes, feat_dim, scale, int(margin), logit_scale)

    @staticmethod
    def library_margin(margin):
        return int(margin)


@LOSS_REGISTRY.register()
class CosFaceLoss(_ClassifierLoss):
    """Large-margin cosine loss (CosFace, Wang et al. 2018) with its own classifier: additive cosine
    margin ``MARGIN``, logit scale ``LOGIT_SCALE``. (``Cosface`` is fastreid's pairwise form.)"""

    config_node = "MODEL.LOSSES.COSFACE_CLS"
    defaults = {"MARGIN": 0.35, "LOGIT_SCALE": 64.0, "SCALE": 1.0}
    terms = ("loss_cosface_cls",)
    library_class = pml_losses.CosFaceLoss
    rules = _ClassifierLoss.rules + (
        Rule("MARGIN", Number(lo=0, hi=1, hi_open=True), "the additive cosine margin",
             "use 0.35 (the CosFace paper's)"),)


@LOSS_REGISTRY.register()
class ArcFaceLoss(_ClassifierLoss):
    """Additive angular margin loss (ArcFace, Deng et al. 2019) with its own classifier: margin ``MARGIN``
    in radians (as fastreid's ArcSoftmax; converted to the degrees pytorch-metric-learning takes), logit
    scale ``LOGIT_SCALE``."""

    config_node = "MODEL.LOSSES.ARCFACE"
    defaults = {"MARGIN": 0.5, "LOGIT_SCALE": 64.0, "SCALE": 1.0}
    terms = ("loss_arcface",)
    library_class = pml_losses.ArcFaceLoss
    rules = _ClassifierLoss.rules + (
        Rule("MARGIN", Number(lo=0, hi=Named(math.pi / 2, "pi/2"), hi_open=True), "the additive angular margin, "
             "in radians", "use 0.5 (the ArcFace paper's)"),)

    @staticmethod
    def library_margin(margin):
        return math.degrees(float(margin))
