"""Config keys added by fastreid_ewth (``add_ewth_config``) and the check of every value users set
(``check_config_values``, :mod:`fastreid_ewth.config.schema`)."""
from .. import modeling  # noqa: F401  (registers this package's losses)
from ..data.own import add_own_data_config
from ..evaluation.rank import TEST_TIES_DEFAULT
from ..modeling.registry import add_loss_configs
from .schema import check_config_values

__all__ = ["add_ewth_config", "check_config_values"]


def add_ewth_config(cfg):
    """Add this package's keys to a fastreid config (in place, returns it). Safe to call twice."""
    frozen = cfg.is_frozen()
    cfg.defrost()

    # The config node of every loss of LOSS_REGISTRY (docs/losses.md), with the defaults its entry declares:
    # MODEL.LOSSES.EWTH from the EWTH option table (fastreid_ewth.losses.options), MODEL.LOSSES.CENTER
    # (AGW's centre loss), the nodes of the pytorch-metric-learning losses; fastreid's own nodes (CE, FL,
    # TRI, CIRCLE, COSFACE) keep fastreid's defaults. Losses registered later by another project get
    # their nodes when the next config is built.
    add_loss_configs(cfg)

    # your own data from YAML: DATASETS.FOLDER.ROOT (ReidFolder, a Market1501-layout folder) and
    # DATASETS.LIST.TRAIN/QUERY/GALLERY/IMAGE_ROOT (ReidList, 'path, pid, camid' list files)
    add_own_data_config(cfg)

    if "WARMUP_EPOCHS" not in cfg.SOLVER:
        # Linear warm-up measured in epochs, whatever the dataset size. When > 0 (EWTHTrainer only) it
        # replaces SOLVER.WARMUP_ITERS and SOLVER.STEPS count epochs from the start of training.
        cfg.SOLVER.WARMUP_EPOCHS = 0

    if "TIES" not in cfg.TEST:
        # How the evaluator orders a correct and a wrong match at exactly the same distance:
        # "pessimistic" (wrong first: the same numbers on every machine, no extra sort) or "fastreid"
        # (numpy's argsort order, as fastreid's evaluator; it depends on numpy's version and the CPU)
        cfg.TEST.TIES = TEST_TIES_DEFAULT

    if "SEED" not in cfg:
        # fastreid seeds python/numpy/torch at random; SEED >= 0 fixes them (rank r uses SEED + r)
        cfg.SEED = -1

    if frozen:
        cfg.freeze()
    return cfg
