"""``EWTHEmbeddingHead``: BNNeck head whose training output carries the classifier weight."""
import torch
import torch.nn.functional as F
from torch import nn

from fastreid.config import configurable
from fastreid.layers import any_softmax, get_norm, pooling
from fastreid.layers.weight_init import weights_init_kaiming
from fastreid.modeling.heads import REID_HEADS_REGISTRY

__all__ = ["EWTHEmbeddingHead"]


@REID_HEADS_REGISTRY.register()
class EWTHEmbeddingHead(nn.Module):
    """Pooling -> (optional 1×1 embedding) -> BNNeck (bias frozen) -> bias-free classifier.

    Training output (a dict):
        ``features``: N×D pooled feature *before* the BNNeck, for the metric losses;
        ``cls_outputs`` / ``pred_class_logits``: N×C logits of the classifier on the after-BN feature;
        ``classifier_weight``: the C×D classifier weight used in this forward pass (the EW term reads
        ``W[y]``; the loss detaches it).
    Eval output: the N×D feature *after* the BNNeck (BoT / AGW test feature).

    The classifier weight is stored as ``heads.weight``, as in fastreid's ``EmbeddingHead``.
    """

    @configurable
    def __init__(self, *, feat_dim, embedding_dim, num_classes, pool_type, cls_type, scale, margin, norm_type):
        super().__init__()
        if not hasattr(pooling, pool_type):
            raise ValueError("MODEL.HEADS.POOL_LAYER {!r} is unknown; choose one of {}".format(
                pool_type, ", ".join(pooling.__all__)))
        if not hasattr(any_softmax, cls_type):
            raise ValueError("MODEL.HEADS.CLS_LAYER {!r} is unknown; choose one of {}".format(
                cls_type, ", ".join(any_softmax.__all__)))
        self.pool_layer = getattr(pooling, pool_type)()
        if embedding_dim > 0:
            self.embedding = nn.Conv2d(feat_dim, embedding_dim, 1, 1, bias=False)
            feat_dim = embedding_dim
        else:
            self.embedding = nn.Identity()
        self.bnneck = get_norm(norm_type, feat_dim, bias_freeze=True)
        self.weight = nn.Parameter(torch.empty(num_classes, feat_dim))
        self.cls_layer = getattr(any_softmax, cls_type)(num_classes, scale, margin)
        self.reset_parameters()

    def reset_parameters(self):
        self.embedding.apply(weights_init_kaiming)
        self.bnneck.apply(weights_init_kaiming)
        nn.init.normal_(self.weight, std=0.001)

    @classmethod
    def from_config(cls, cfg):
        h = cfg.MODEL.HEADS
        if not h.WITH_BNNECK:
            raise ValueError("EWTHEmbeddingHead is a BNNeck head: MODEL.HEADS.WITH_BNNECK must be True "
                             "(use fastreid's EmbeddingHead for a head without BNNeck).")
        return {
            "feat_dim": cfg.MODEL.BACKBONE.FEAT_DIM,
            "embedding_dim": h.EMBEDDING_DIM,
            "num_classes": h.NUM_CLASSES,
            "pool_type": h.POOL_LAYER,
            "cls_type": h.CLS_LAYER,
            "scale": h.SCALE,
            "margin": h.MARGIN,
            "norm_type": h.NORM,
        }

    def forward(self, features, targets=None):
        """features: N×C×H×W backbone map; targets: N labels (training only)."""
        pre_bn = self.embedding(self.pool_layer(features))
        after_bn = self.bnneck(pre_bn)[..., 0, 0]
        if not self.training:
            return after_bn
        if type(self.cls_layer) is any_softmax.Linear:
            logits = F.linear(after_bn, self.weight)
        else:  # margin softmaxes work on cosines
            logits = F.linear(F.normalize(after_bn), F.normalize(self.weight))
        return {
            "cls_outputs": self.cls_layer(logits.clone(), targets),
            "pred_class_logits": logits * self.cls_layer.s,
            "features": pre_bn[..., 0, 0],
            "classifier_weight": self.weight,
        }
