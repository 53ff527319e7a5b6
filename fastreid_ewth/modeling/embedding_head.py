"""``EWTHEmbeddingHead``: fastreid's embedding head whose training output carries every feature a loss may
read (pre- and after-BNNeck) and the classifier weight."""
import torch
import torch.nn.functional as F
from torch import nn

from fastreid.config import configurable
from fastreid.layers import any_softmax, get_norm, pooling
from fastreid.layers.weight_init import weights_init_kaiming
from fastreid.modeling.heads import REID_HEADS_REGISTRY

__all__ = ["EWTHEmbeddingHead", "NECK_FEATS"]

#: ``MODEL.HEADS.NECK_FEAT`` -> which feature the metric losses train on (fastreid's meaning).
NECK_FEATS = {"before": "pre_bn_features", "after": "after_bn_features"}


@REID_HEADS_REGISTRY.register()
class EWTHEmbeddingHead(nn.Module):
    """Pooling -> (optional 1×1 embedding) -> BNNeck (bias frozen; none without ``WITH_BNNECK``) ->
    bias-free classifier.

    Training output (a dict):
        ``pre_bn_features`` / ``after_bn_features``: the N×D feature before and after the BNNeck (the
        same tensor without BNNeck);
        ``features``: the metric losses' feature, chosen by ``MODEL.HEADS.NECK_FEAT`` as in fastreid:
        ``before`` the pre-BNNeck one (BoT, AGW), ``after`` the after-BNNeck one (fastreid's SBS);
        ``cls_outputs`` / ``pred_class_logits``: N×C logits of the classifier on the after-BN feature,
        with and without the classification layer's margin;
        ``classifier_weight``: the C×D classifier weight used in this forward pass (the EW term reads
        ``W[y]``; the loss detaches it).
    Eval output: the N×D feature *after* the BNNeck (the test feature of BoT, AGW and fastreid), whatever
    ``NECK_FEAT`` says.

    The classifier weight is stored as ``heads.weight``, as in fastreid's ``EmbeddingHead``.
    """

    #: keys of the training output
    TRAINING_OUTPUTS = ("features", "pre_bn_features", "after_bn_features", "cls_outputs", "pred_class_logits",
                        "classifier_weight")

    @configurable
    def __init__(self, *, feat_dim, embedding_dim, num_classes, pool_type, cls_type, scale, margin, norm_type,
                 with_bnneck=True, neck_feat="before"):
        super().__init__()
        if neck_feat not in NECK_FEATS:
            raise ValueError("MODEL.HEADS.NECK_FEAT {!r} is unknown; choose 'before' (the metric losses train on "
                             "the pre-BNNeck feature, BoT/AGW) or 'after' (after the BNNeck)".format(neck_feat))
        self.neck_feat = neck_feat
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
        self.bnneck = get_norm(norm_type, feat_dim, bias_freeze=True) if with_bnneck else nn.Identity()
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
        return {
            "feat_dim": cfg.MODEL.BACKBONE.FEAT_DIM,
            "embedding_dim": h.EMBEDDING_DIM,
            "num_classes": h.NUM_CLASSES,
            "pool_type": h.POOL_LAYER,
            "cls_type": h.CLS_LAYER,
            "scale": h.SCALE,
            "margin": h.MARGIN,
            "norm_type": h.NORM,
            "with_bnneck": bool(h.WITH_BNNECK),
            "neck_feat": h.NECK_FEAT,
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
        outputs = {
            "cls_outputs": self.cls_layer(logits.clone(), targets),
            "pred_class_logits": logits * self.cls_layer.s,
            "pre_bn_features": pre_bn[..., 0, 0],
            "after_bn_features": after_bn,
            "classifier_weight": self.weight,
        }
        outputs["features"] = outputs[NECK_FEATS[self.neck_feat]]
        return outputs
