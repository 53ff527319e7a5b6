"""``--eval-only``: evaluate the weights named by ``MODEL.WEIGHTS`` on ``DATASETS.TESTS``."""
import logging
import os

import torch

from fastreid.utils.checkpoint import Checkpointer

from .trainer import EWTHTrainer

logger = logging.getLogger(__name__)


def _classifier_rows(state_dict):
    """Number of identities the checkpoint's classifier was trained with (0 if it has none)."""
    for key in ("heads.weight", "heads.classifier.weight"):  # fastreid's head, then a Linear classifier
        if key in state_dict:
            return int(state_dict[key].shape[0])
    return 0


def evaluate_checkpoint(cfg):
    """Build the model of ``cfg``, load ``cfg.MODEL.WEIGHTS`` and return the evaluation results.

    An empty ``MODEL.WEIGHTS`` evaluates the untrained (randomly initialised) model, which gives the
    chance-level baseline of a dataset; a path that does not exist is an error.
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.BACKBONE.PRETRAIN = False
    weights = cfg.MODEL.WEIGHTS
    if weights:
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                "MODEL.WEIGHTS {!r} does not exist. Pass the checkpoint of a finished run, e.g. "
                "`--eval-only MODEL.WEIGHTS <OUTPUT_DIR>/model_final.pth`.".format(weights))
        if cfg.MODEL.HEADS.NUM_CLASSES == 0:
            # the classifier is not used at test time, but sizing it like the checkpoint's keeps
            # the load free of shape-mismatch warnings
            state = torch.load(weights, map_location="cpu", weights_only=False)
            cfg.MODEL.HEADS.NUM_CLASSES = _classifier_rows(state.get("model", state))
    else:
        logger.warning("MODEL.WEIGHTS is empty: evaluating an untrained, randomly initialised model.")
    cfg.freeze()

    model = EWTHTrainer.build_model(cfg)
    if weights:
        Checkpointer(model).load(weights)
    return EWTHTrainer.test(cfg, model)
