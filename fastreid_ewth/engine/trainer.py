"""``EWTHTrainer``: fastreid's ``DefaultTrainer`` made to run anywhere fastreid_ewth runs.

What it changes, and why:
- ``MODEL.DEVICE`` ``cuda`` on a machine without CUDA falls back to ``cpu`` (logged), and AMP, which
  fastreid implements with CUDA-only autocast, is switched off on CPU (logged).
- Data loading: on CPU a plain ``DataLoader`` (see ``compat._patch_cpu_data_loader``); on GPU fastreid's
  prefetching loader is kept.
- The identity sampler is checked before anything is built (P×K batches on every process).
- ``SOLVER.WARMUP_EPOCHS``: warm-up in epochs, decays at the epochs written in ``SOLVER.STEPS``.
- Center loss: its centers get their own SGD, checkpointed and restored with the run.
- Evaluation uses fastreid_ewth's evaluator, which never compiles anything.
"""
import logging

import torch
from torch.nn.parallel import DistributedDataParallel

from fastreid.engine import DefaultTrainer
from fastreid.utils import comm

from ..evaluation import EWTHReidEvaluator
from .hooks import CenterLossOptimizer
from .sampler_check import check_identity_sampler
from .schedule import build_epoch_scheduler, warmup_iters

logger = logging.getLogger(__name__)

__all__ = ["EWTHTrainer", "resolve_device"]


def resolve_device(cfg):
    """Make ``cfg`` runnable on this machine, in place: CUDA -> CPU and AMP off when CUDA is absent.

    Returns ``cfg``. Logs every change so the user sees why the run differs from the file.
    """
    frozen = cfg.is_frozen()
    cfg.defrost()
    device = str(cfg.MODEL.DEVICE)
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is %r but CUDA is not available: running on cpu.", device)
        cfg.MODEL.DEVICE = "cpu"
    if cfg.SOLVER.AMP.ENABLED and not str(cfg.MODEL.DEVICE).startswith("cuda"):
        logger.warning("SOLVER.AMP.ENABLED is True but the model runs on %s: AMP switched off "
                       "(fastreid's AMP needs CUDA).", cfg.MODEL.DEVICE)
        cfg.SOLVER.AMP.ENABLED = False
    if frozen:
        cfg.freeze()
    return cfg


def _center_loss_of(model):
    if isinstance(model, DistributedDataParallel):
        model = model.module
    return getattr(model, "center_loss", None)


class EWTHTrainer(DefaultTrainer):
    """fastreid's ``DefaultTrainer`` with the device fallbacks, schedule, center-loss optimizer and
    evaluator of fastreid_ewth.

    Attributes (besides DefaultTrainer's):
        center_optimizer: the centers' SGD when ``CenterLoss`` is trained, else ``None``.
    """

    def __init__(self, cfg):
        cfg = resolve_device(cfg.clone())
        check_identity_sampler(cfg, comm.get_world_size())
        super().__init__(cfg)
        # DefaultTrainer reads SOLVER.WARMUP_ITERS; with WARMUP_EPOCHS the LR hook must see the epoch count
        self.warmup_iters = warmup_iters(cfg, self.iters_per_epoch)
        self.center_optimizer = None
        center = _center_loss_of(self.model)
        if center is not None:
            self.center_optimizer = torch.optim.SGD(center.parameters(), lr=cfg.MODEL.LOSSES.CENTER.LR)
            self.checkpointer.checkpointables["center_optimizer"] = self.center_optimizer
            self.register_hooks([CenterLossOptimizer(self.center_optimizer, center)])

    @classmethod
    def build_model(cls, cfg):
        return super().build_model(resolve_device(cfg.clone()))

    @classmethod
    def build_optimizer(cls, cfg, model):
        # fastreid's parameter collection skips parameters that do not require grad: hide the centers
        # from it for the duration of the call, so they are stepped only by their own optimizer
        center = _center_loss_of(model)
        hidden = [p for p in center.parameters() if p.requires_grad] if center is not None else []
        for p in hidden:
            p.requires_grad_(False)
        try:
            return super().build_optimizer(cfg, model)
        finally:
            for p in hidden:
                p.requires_grad_(True)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer, iters_per_epoch):
        return build_epoch_scheduler(cfg, optimizer, iters_per_epoch)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        return data_loader, EWTHReidEvaluator(cfg, num_query, output_dir)
