"""``EWTHBaseline``: fastreid's ``Baseline`` with the EWTH losses and AGW's center loss."""
from fastreid.config import configurable
from fastreid.modeling.losses import cross_entropy_loss, log_accuracy
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline
from fastreid.utils.events import get_event_storage

from ..files import DIAGNOSTICS_PREFIX
from ..losses.diagnostics import diagnostic_values
from .center_loss import CenterLoss, check_center_config
from .ewth_loss import EWTHLoss

# DIAGNOSTICS_PREFIX (defined in fastreid_ewth.files) is re-exported here for the code that imports it from here
__all__ = ["EWTHBaseline", "SUPPORTED_LOSSES", "DIAGNOSTICS_PREFIX"]

SUPPORTED_LOSSES = ("CrossEntropyLoss", "EWTHLoss", "CenterLoss")


@META_ARCH_REGISTRY.register()
class EWTHBaseline(Baseline):
    """Backbone + ``EWTHEmbeddingHead`` trained with any of ``SUPPORTED_LOSSES``.

    Each loss term is returned (and so logged) under its own name: ``loss_cls``, ``loss_triplet``,
    ``loss_mean_neg``, ``loss_ew``, ``loss_center``. The metric losses see the pre-BNNeck feature, the
    classifier the after-BNNeck one (BNNeck, Luo et al. 2019).

    With ``EWTHLoss``, every training step inside fastreid's ``EventStorage`` also puts the batch's mining
    diagnostics (:mod:`fastreid_ewth.losses.diagnostics`, computed by the loss from its own mining, no second
    pass over the batch) into that storage as ``diag/hinge_active``, ``diag/d_ap``, ``diag/d_an`` and, for EW
    variants, ``diag/ew_kept``; its writers take them to ``metrics.json`` and tensorboard. They are not
    losses, so they stay out of the returned dict.
    """

    @configurable
    def __init__(self, *, backbone, heads, pixel_mean, pixel_std, loss_names, ce_kwargs, ewth_loss=None,
                 center_loss=None):
        super().__init__(backbone=backbone, heads=heads, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         loss_kwargs={"loss_names": tuple(loss_names), "ce": ce_kwargs})
        self.loss_names = tuple(loss_names)
        self.ce_kwargs = dict(ce_kwargs)
        self.ewth_loss = ewth_loss
        self.center_loss = center_loss

    @classmethod
    def from_config(cls, cfg):
        names = tuple(cfg.MODEL.LOSSES.NAME)
        unknown = [n for n in names if n not in SUPPORTED_LOSSES]
        if unknown or not names:
            raise ValueError("MODEL.LOSSES.NAME {} has {}; EWTHBaseline supports {}. Example: MODEL.LOSSES.NAME "
                             "'(\"CrossEntropyLoss\", \"EWTHLoss\")'".format(
                                 names, "unknown name(s) {}".format(unknown) if unknown else "no loss",
                                 ", ".join(SUPPORTED_LOSSES)))
        if cfg.MODEL.HEADS.NAME != "EWTHEmbeddingHead" and ("EWTHLoss" in names or "CenterLoss" in names):
            raise ValueError("MODEL.HEADS.NAME {!r}: EWTHLoss and CenterLoss need the pre-BNNeck feature and the "
                             "classifier weight that only EWTHEmbeddingHead returns; set MODEL.HEADS.NAME "
                             "EWTHEmbeddingHead".format(cfg.MODEL.HEADS.NAME))
        base = Baseline.from_config(cfg)
        feat_dim = cfg.MODEL.HEADS.EMBEDDING_DIM or cfg.MODEL.BACKBONE.FEAT_DIM
        center = None
        if "CenterLoss" in names:
            center = CenterLoss(cfg.MODEL.HEADS.NUM_CLASSES, feat_dim, check_center_config(cfg)["SCALE"])
        return {
            "backbone": base["backbone"],
            "heads": base["heads"],
            "pixel_mean": base["pixel_mean"],
            "pixel_std": base["pixel_std"],
            "loss_names": names,
            "ce_kwargs": {"eps": cfg.MODEL.LOSSES.CE.EPSILON, "alpha": cfg.MODEL.LOSSES.CE.ALPHA,
                          "scale": cfg.MODEL.LOSSES.CE.SCALE},
            "ewth_loss": EWTHLoss.from_config(cfg) if "EWTHLoss" in names else None,
            "center_loss": center,
        }

    def losses(self, outputs, gt_labels):
        log_accuracy(outputs["pred_class_logits"].detach(), gt_labels)
        loss_dict = {}
        if "CrossEntropyLoss" in self.loss_names:
            loss_dict["loss_cls"] = cross_entropy_loss(
                outputs["cls_outputs"], gt_labels, self.ce_kwargs["eps"], self.ce_kwargs["alpha"]
            ) * self.ce_kwargs["scale"]
        if self.ewth_loss is not None:
            storage = _current_storage()  # outside fastreid's training loop (tests, notebooks): nothing to log to
            metric = self.ewth_loss(outputs["features"], gt_labels, outputs["classifier_weight"],
                                    diagnostics=storage is not None)
            if storage is not None:
                metric, diagnostics = metric
                _log_diagnostics(storage, diagnostics)
            loss_dict.update(metric)
        if self.center_loss is not None:
            loss_dict["loss_center"] = self.center_loss(outputs["features"], gt_labels)
        return loss_dict


def _log_diagnostics(storage, diagnostics):
    """``diag/<name>`` into ``storage``, with one device-to-host copy for all of them."""
    for name, value in diagnostic_values(diagnostics).items():
        storage.put_scalar(DIAGNOSTICS_PREFIX + name, value)


def _current_storage():
    """fastreid's innermost ``EventStorage``, or ``None`` outside ``with EventStorage(...)``."""
    try:
        return get_event_storage()
    except (AssertionError, IndexError):  # it asserts a non-empty stack (IndexError under python -O)
        return None
