"""Config keys added by fastreid_ewth (``add_ewth_config``)."""
from fastreid.config import CfgNode as CN


def add_ewth_config(cfg):
    """Add this package's keys to a fastreid config (in place, returns it). Safe to call twice."""
    frozen = cfg.is_frozen()
    cfg.defrost()

    if "EWTH" not in cfg.MODEL.LOSSES:
        # EWTH loss family (SPEC §1); margins <= 0 mean soft margin for every term.
        cfg.MODEL.LOSSES.EWTH = CN()
        cfg.MODEL.LOSSES.EWTH.VARIANT = "HNEWTH"
        cfg.MODEL.LOSSES.EWTH.MARGIN = 0.3
        cfg.MODEL.LOSSES.EWTH.MEAN_NEG_MARGIN = 0.3
        cfg.MODEL.LOSSES.EWTH.EW_MARGIN = 0.3
        cfg.MODEL.LOSSES.EWTH.EW_THRESHOLD = 0.1
        cfg.MODEL.LOSSES.EWTH.NORM_FEAT = "none"
        cfg.MODEL.LOSSES.EWTH.SCALE = 1.0

    if "CENTER" not in cfg.MODEL.LOSSES:
        # Center loss as in AGW: centers have their own SGD (lr LR), gradient divided by SCALE before it
        cfg.MODEL.LOSSES.CENTER = CN()
        cfg.MODEL.LOSSES.CENTER.SCALE = 0.0005
        cfg.MODEL.LOSSES.CENTER.LR = 0.5

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
