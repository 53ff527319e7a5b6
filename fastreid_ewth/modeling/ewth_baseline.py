"""``EWTHBaseline``: fastreid's ``Baseline`` trained with any losses of ``LOSS_REGISTRY``."""
from fastreid.config import configurable
from fastreid.modeling.losses import log_accuracy
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline
from torch import nn

from ..files import DIAGNOSTICS_PREFIX
from .registry import build_loss_modules, gather_inputs, renamed_terms

# DIAGNOSTICS_PREFIX (defined in fastreid_ewth.files) is re-exported here for the code that imports it from here
__all__ = ["EWTHBaseline", "DIAGNOSTICS_PREFIX"]

# inputs that come from the head's classifier
_CLASSIFIER_INPUTS = ("logits", "classifier_weight")


@META_ARCH_REGISTRY.register()
class EWTHBaseline(Baseline):
    """Backbone + head trained with the losses ``MODEL.LOSSES.NAME`` lists, any registered ones.

    Every listed loss is an entry of :data:`~fastreid_ewth.modeling.registry.LOSS_REGISTRY`, built from its
    config node and held in ``loss_modules`` (so that weights of its own are the model's). Each step, each
    entry gets the head outputs it declares it reads and returns its terms, which are returned (and so
    logged) under their own names: ``loss_cls``, ``loss_triplet``, ``loss_center``, ... A term two listed
    losses share is logged as ``<term>_<LossName>``.

    When no listed loss reads the head's classifier (the logits or its weight), the classifier is frozen
    (``requires_grad`` off), so that neither the optimizer nor DDP waits for a gradient that never comes,
    and ``cls_accuracy`` is not logged.
    """

    @configurable
    def __init__(self, *, backbone, heads, pixel_mean, pixel_std, loss_modules):
        super().__init__(backbone=backbone, heads=heads, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         loss_kwargs={"loss_names": tuple(loss_modules)})
        self.loss_modules = loss_modules if isinstance(loss_modules, nn.ModuleDict) else nn.ModuleDict(loss_modules)
        self.loss_names = tuple(self.loss_modules)
        self._term_names = renamed_terms([(name, type(m)) for name, m in self.loss_modules.items()])
        self.reads_classifier = any(what in _CLASSIFIER_INPUTS for m in self.loss_modules.values() for what in m.reads)
        classifier = getattr(heads, "weight", None)
        if not self.reads_classifier and isinstance(classifier, nn.Parameter):
            classifier.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg):
        base = Baseline.from_config(cfg)
        heads = base["heads"]
        return {
            "backbone": base["backbone"],
            "heads": heads,
            "pixel_mean": base["pixel_mean"],
            "pixel_std": base["pixel_std"],
            "loss_modules": build_loss_modules(cfg, getattr(heads, "TRAINING_OUTPUTS", None)),
        }

    def losses(self, outputs, gt_labels):
        if self.reads_classifier:
            log_accuracy(outputs["pred_class_logits"].detach(), gt_labels)
        loss_dict = {}
        for name, module in self.loss_modules.items():
            terms = module.training_terms(*gather_inputs(module, outputs, gt_labels))
            names = self._term_names[name]
            for term, value in terms.items():
                loss_dict[names.get(term, term)] = value
        return loss_dict
