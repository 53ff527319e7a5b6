"""Config keys added by fastreid_ewth (``add_ewth_config``)."""
from fastreid.config import CfgNode as CN

from .losses.options import ewth_config_defaults
from .modeling.center_loss import center_config_defaults


def add_ewth_config(cfg):
    """Add this package's keys to a fastreid config (in place, returns it). Safe to call twice."""
    frozen = cfg.is_frozen()
    cfg.defrost()

    if "EWTH" not in cfg.MODEL.LOSSES:
        # EWTH loss family (docs/losses.md); keys and defaults come from the loss's option table
        # (fastreid_ewth.losses.options.EWTH_OPTIONS). MARGIN <= 0 means the soft margin for every term.
        cfg.MODEL.LOSSES.EWTH = CN(ewth_config_defaults())

    if "CENTER" not in cfg.MODEL.LOSSES:
        # Center loss as in AGW: centers have their own SGD (lr LR), gradient divided by SCALE before it;
        # defaults from fastreid_ewth.modeling.center_loss.CENTER_DEFAULTS
        cfg.MODEL.LOSSES.CENTER = CN(center_config_defaults())

    if "WARMUP_EPOCHS" not in cfg.SOLVER:
        # Linear warm-up measured in epochs, whatever the dataset size. When > 0 (EWTHTrainer only) it
        # replaces SOLVER.WARMUP_ITERS and SOLVER.STEPS count epochs from the start of training.
        cfg.SOLVER.WARMUP_EPOCHS = 0

    if "SEED" not in cfg:
        # fastreid seeds python/numpy/torch at random; SEED >= 0 fixes them (rank r uses SEED + r)
        cfg.SEED = -1

    if frozen:
        cfg.freeze()
    return cfg
