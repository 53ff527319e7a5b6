"""Epoch-based warm-up and absolute decay epochs on top of fastreid's scheduler.

fastreid warms up over ``SOLVER.WARMUP_ITERS`` iterations (so "10 epochs" depends on the dataset size)
and only starts counting ``SOLVER.STEPS`` once warm-up is over (so ``STEPS [40, 70]`` after a 10-epoch
warm-up decays at epochs 50 and 80). With ``SOLVER.WARMUP_EPOCHS > 0`` EWTHTrainer converts both:
warm-up lasts that many epochs and the decays happen at the epochs written in ``STEPS``.
"""
from fastreid.solver import build_lr_scheduler

__all__ = ["warmup_iters", "build_epoch_scheduler"]


def warmup_iters(cfg, iters_per_epoch):
    """Iterations of warm-up for this run."""
    if cfg.SOLVER.WARMUP_EPOCHS > 0:
        return int(cfg.SOLVER.WARMUP_EPOCHS * iters_per_epoch)
    return cfg.SOLVER.WARMUP_ITERS


def build_epoch_scheduler(cfg, optimizer, iters_per_epoch):
    """fastreid's ``{"lr_sched", "warmup_sched"}`` dict, with epoch warm-up and absolute STEPS.

    Meant for fastreid's ``LRScheduler`` hook, which steps ``warmup_sched`` every warm-up iteration and
    ``lr_sched`` after every epoch whose last iteration reaches the end of warm-up: the first such epoch
    is ``ceil(warmup_iters / iters_per_epoch) - 1``, after which ``lr_sched`` has counted 1. A decay meant
    to take effect at epoch ``s`` is therefore milestone ``s - that epoch``.
    """
    if cfg.SOLVER.WARMUP_EPOCHS <= 0:
        return build_lr_scheduler(cfg, optimizer, iters_per_epoch)
    if iters_per_epoch <= 0:
        raise ValueError("iters_per_epoch must be > 0 (is SOLVER.IMS_PER_BATCH larger than the training set?)")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SOLVER.WARMUP_ITERS = warmup_iters(cfg, iters_per_epoch)
    warmup_end = -(-cfg.SOLVER.WARMUP_ITERS // iters_per_epoch)  # ceil: first epoch at full lr
    if any(s <= warmup_end for s in cfg.SOLVER.STEPS):
        raise ValueError("SOLVER.STEPS {} decays during the {}-epoch warm-up (SOLVER.WARMUP_EPOCHS); decay epochs "
                         "must be > {}".format(list(cfg.SOLVER.STEPS), cfg.SOLVER.WARMUP_EPOCHS, warmup_end))
    cfg.SOLVER.STEPS = [s - (warmup_end - 1) for s in cfg.SOLVER.STEPS]
    return build_lr_scheduler(cfg, optimizer, iters_per_epoch)
