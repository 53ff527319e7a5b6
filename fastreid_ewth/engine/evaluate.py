"""``--eval-only``: evaluate the weights named by ``MODEL.WEIGHTS`` on ``DATASETS.TESTS``."""
import logging
import os

import torch

from ..files import CONFIG_YAML, MODEL_FINAL
from ..reliability.checkpoint import DamagedCheckpointError, load_checkpoint
from .trainer import EWTHTrainer

logger = logging.getLogger(__name__)

__all__ = ["evaluate_checkpoint", "load_matching_weights", "load_trained_model"]


def _classifier_rows(state_dict):
    """Number of identities the checkpoint's classifier was trained with (0 if it has none)."""
    for key in ("heads.weight", "heads.classifier.weight"):  # fastreid's head, then a Linear classifier
        if key in state_dict:
            return int(state_dict[key].shape[0])
    return 0


def _read_state_dict(path):
    try:
        checkpoint = load_checkpoint(path)
    except DamagedCheckpointError as e:  # e.g. a zip whose content is damaged: the cheap checks cannot see it
        raise ValueError("MODEL.WEIGHTS {!r} {}. Pass the checkpoint of a finished run, e.g. `MODEL.WEIGHTS "
                         "<OUTPUT_DIR>/{}`.".format(path, e.problem, MODEL_FINAL)) from None
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError("MODEL.WEIGHTS {!r} is not a model checkpoint (expected a state dict, or a dict with a "
                         "'model' state dict, as tools/train_net.py writes)".format(path))
    # weights saved from a DistributedDataParallel model carry a "module." prefix
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_matching_weights(model, path, state=None):
    """Load ``path`` into ``model``, refusing weights of another architecture.

    Every parameter and buffer of ``model`` must be in the checkpoint with the same shape; otherwise a
    ``ValueError`` lists the missing and mismatched keys (evaluating half-random weights would print
    numbers that mean nothing). Keys only the checkpoint has (e.g. center-loss centers) are ignored.
    """
    state = _read_state_dict(path) if state is None else state
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    mismatched = ["{}: checkpoint {} vs model {}".format(k, tuple(state[k].shape), tuple(v.shape))
                  for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or mismatched:
        def listing(items):
            return "\n  ".join(items[:10]) + ("\n  ... and {} more".format(len(items) - 10) if len(items) > 10 else "")
        parts = []
        if missing:
            parts.append("{} key(s) of the model are missing from the checkpoint:\n  {}".format(
                len(missing), listing(missing)))
        if mismatched:
            parts.append("{} key(s) have other shapes:\n  {}".format(len(mismatched), listing(mismatched)))
        raise ValueError("MODEL.WEIGHTS {!r} belongs to another architecture than this config builds ({}).\n{}\n"
                         "Use the config the checkpoint was trained with (OUTPUT_DIR/{} of its run).".format(
                             path, type(model).__name__, "\n".join(parts), CONFIG_YAML))
    model.load_state_dict({k: state[k] for k in own})
    logger.info("Loaded %d tensors from %s", len(own), path)


def load_trained_model(cfg):
    """The model of ``cfg`` with the weights of ``cfg.MODEL.WEIGHTS``, in eval mode: what ``--eval-only`` tests.

    An empty ``MODEL.WEIGHTS`` gives the untrained (randomly initialised) model, which gives the chance-level
    baseline of a dataset; a path that does not exist is an error. Returns ``(cfg, model)``: the config as
    the model was built (ImageNet download off, the classifier sized like the checkpoint's).
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.BACKBONE.PRETRAIN = False
    weights = cfg.MODEL.WEIGHTS
    state = None
    if weights:
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                "MODEL.WEIGHTS {!r} does not exist. Pass the checkpoint of a finished run, e.g. "
                "`--eval-only MODEL.WEIGHTS <OUTPUT_DIR>/{}`.".format(weights, MODEL_FINAL))
        state = _read_state_dict(weights)
    else:
        logger.warning("MODEL.WEIGHTS is empty: using an untrained, randomly initialised model.")
    if cfg.MODEL.HEADS.NUM_CLASSES == 0:
        # the classifier (and center loss) is not used at test time: size it like the checkpoint's so
        # that it loads, with at least one row so that every loss module can be built
        cfg.MODEL.HEADS.NUM_CLASSES = max(_classifier_rows(state or {}), 1)
    cfg.freeze()

    model = EWTHTrainer.build_model(cfg)
    if weights:
        load_matching_weights(model, weights, state)
    return cfg, model.eval()


def evaluate_checkpoint(cfg):
    """Build the model of ``cfg``, load ``cfg.MODEL.WEIGHTS`` and return the evaluation results
    (see :func:`load_trained_model`)."""
    cfg, model = load_trained_model(cfg)
    return EWTHTrainer.test(cfg, model)
