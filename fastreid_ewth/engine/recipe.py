"""``RecipeTrainer``: fastreid's ``DefaultTrainer`` with the BoT/AGW recipe of this package, and nothing else.

What it changes, and why:
- ``MODEL.DEVICE`` ``cuda`` on a machine without CUDA falls back to ``cpu`` (logged), and AMP, which
  fastreid implements with CUDA-only autocast, is switched off on CPU (logged); the identity sampler is
  checked before anything is built (P×K batches on every process). See :mod:`.setup`.
- ``SOLVER.WARMUP_EPOCHS``: warm-up in epochs, decays at the epochs written in ``SOLVER.STEPS``
  (:mod:`.schedule`).
- Centre loss: its centres get their own SGD, checkpointed with the run
  (:mod:`fastreid_ewth.modeling.center_loss`).
- A run that trains a single loss logs its term under its own name too (fastreid logs only ``total_loss``
  then), so every loss's term is in ``metrics.json`` and tensorboard.
- Data: datasets built by :func:`fastreid_ewth.data.build_dataset`, so that your own folder or list files
  (``ReidFolder``, ``ReidList``) are read from their config keys; test loaders sized to the machine's cores.
- Evaluation: the exact evaluator of :mod:`fastreid_ewth.evaluation`, which never compiles anything.

Reliability (atomic checkpoints, exact resume, the non-finite-loss guard) is a separate layer,
:class:`fastreid_ewth.reliability.ReliableTraining`; :class:`fastreid_ewth.engine.EWTHTrainer` is the two
together.
"""
import logging
import os

from fastreid.data import build_reid_test_loader, build_reid_train_loader
from fastreid.engine import DefaultTrainer
from fastreid.utils import comm
from fastreid.utils.events import get_event_storage

from .. import compat
from ..data import build_test_set, build_train_set
from ..evaluation import ExactReidEvaluator
from ..modeling.center_loss import CenterLossOptimizer, center_loss_of
from .schedule import build_epoch_scheduler, warmup_iters
from .setup import check_identity_sampler, log_to_output_dir, resolve_device

logger = logging.getLogger(__name__)

__all__ = ["RecipeTrainer", "available_cores", "make_test_loader"]

# the workers of fastreid's test loader
_TEST_WORKERS = 4


def available_cores():
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_test_loader(cfg, test_set, num_query):
    """``(loader, num_query)``: fastreid's test loader of ``test_set`` in ``TEST.IMS_PER_BATCH`` batches.

    fastreid's always starts 4 workers; more than there are cores only adds processes (and torch's warning
    about them).
    """
    return build_reid_test_loader(test_set=test_set, test_batch_size=cfg.TEST.IMS_PER_BATCH, num_query=num_query,
                                  num_workers=min(_TEST_WORKERS, available_cores()))


def _log_single_term(loss_dict):
    """With one loss term fastreid puts only ``total_loss``, which then is that term: log it by name too."""
    if len(loss_dict) == 1 and comm.is_main_process():
        storage = get_event_storage()
        (name,) = loss_dict
        storage.put_scalar(name, storage.history("total_loss").latest())


class RecipeTrainer(DefaultTrainer):
    """fastreid's ``DefaultTrainer`` with the device fallbacks, epoch schedule, centre-loss optimizer and exact
    evaluator of fastreid_ewth.

    Attributes (besides DefaultTrainer's):
        center_optimizer: the centres' SGD when ``CenterLoss`` is trained, else ``None``.
    """

    def __init__(self, cfg):
        log_to_output_dir(cfg.OUTPUT_DIR)
        cfg = resolve_device(cfg.clone())
        check_identity_sampler(cfg, comm.get_world_size())
        super().__init__(cfg)
        # DefaultTrainer reads SOLVER.WARMUP_ITERS; with WARMUP_EPOCHS the LR hook must see the epoch count
        compat.set_warmup_iters(self, warmup_iters(cfg, self.iters_per_epoch))
        compat.call_after_write_metrics(self, _log_single_term)
        self.center_optimizer = None
        center = center_loss_of(self.model)
        if center is not None:
            hook = CenterLossOptimizer.from_config(cfg, center)
            self.center_optimizer = hook.optimizer
            self.checkpointer.checkpointables["center_optimizer"] = self.center_optimizer
            self.register_hooks([hook])

    @classmethod
    def build_model(cls, cfg):
        return super().build_model(resolve_device(cfg.clone()))

    @classmethod
    def build_optimizer(cls, cfg, model):
        # the centres are stepped only by their own optimizer
        center = center_loss_of(model)
        parameters = list(center.parameters()) if center is not None else []
        return compat.build_optimizer_without(super().build_optimizer, cfg, model, parameters)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer, iters_per_epoch):
        return build_epoch_scheduler(cfg, optimizer, iters_per_epoch)

    @classmethod
    def build_train_loader(cls, cfg):
        logger.info("Prepare training set")
        return build_reid_train_loader(cfg, train_set=build_train_set(cfg))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return make_test_loader(cfg, *build_test_set(cfg, dataset_name))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        return data_loader, ExactReidEvaluator(cfg, num_query, output_dir)
