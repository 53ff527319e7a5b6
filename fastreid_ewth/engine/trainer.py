"""``EWTHTrainer``: fastreid's ``DefaultTrainer`` made to run anywhere fastreid_ewth runs.

What it changes, and why:
- ``MODEL.DEVICE`` ``cuda`` on a machine without CUDA falls back to ``cpu`` (logged), and AMP, which
  fastreid implements with CUDA-only autocast, is switched off on CPU (logged).
- Data loading: on CPU a plain ``DataLoader`` (see ``compat._patch_cpu_data_loader``); on GPU fastreid's
  prefetching loader is kept.
- Evaluation uses fastreid_ewth's evaluator, which never compiles anything.
"""
import logging

import torch

from fastreid.engine import DefaultTrainer

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


class EWTHTrainer(DefaultTrainer):
    """fastreid's ``DefaultTrainer`` with the device fallbacks and evaluator of fastreid_ewth."""

    def __init__(self, cfg):
        super().__init__(resolve_device(cfg.clone()))

    @classmethod
    def build_model(cls, cfg):
        return super().build_model(resolve_device(cfg.clone()))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        return data_loader, _make_evaluator(cfg, num_query, output_dir)


def _make_evaluator(cfg, num_query, output_dir):
    try:
        from fastreid_ewth.evaluation import EWTHReidEvaluator
    except ImportError:
        from fastreid.evaluation import ReidEvaluator as EWTHReidEvaluator
    return EWTHReidEvaluator(cfg, num_query, output_dir)
