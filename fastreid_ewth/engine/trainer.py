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
- Reliability: checkpoints are written atomically (``AtomicCheckpointer``); ``--resume`` continues the
  interrupted run exactly (``TrainingState``: random states of every process, the data stream's position
  and seeds; the grad scaler with AMP); a non-finite loss stops every process before the weights change,
  after saving the last good state (``NonFiniteLossGuard``).
"""
import logging
import os
import sys

import torch
from torch.nn.parallel import DistributedDataParallel

from fastreid.engine import DefaultTrainer
from fastreid.engine import hooks as fastreid_hooks
from fastreid.utils import comm

from ..evaluation import EWTHReidEvaluator
from .checkpoint import AtomicCheckpointer, remove_stale_temporaries
from .hooks import CenterLossOptimizer, ResumableCheckpointer
from .nan_guard import NonFiniteLossGuard
from .resumable_loader import make_resumable
from .resume import TrainingState
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


def _log_to_output_dir(output_dir):
    """Send fastreid_ewth's log records where fastreid's go, keeping warnings on stderr as before.

    fastreid's ``default_setup`` configures only the ``fastreid`` logger; without this, the plugin's INFO
    records (resuming, restored random states) would be dropped and its warnings would reach stderr only.
    INFO goes to stdout on the main process, WARNING and above to stderr, everything to ``log.txt``
    (``log.txt.rankN`` on other processes), as fastreid names its files.
    """
    plugin = logging.getLogger("fastreid_ewth")
    if getattr(plugin, "_ewth_configured", False):
        return
    plugin.setLevel(logging.INFO)
    # the format of fastreid's log.txt
    formatter = logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s", datefmt="%m/%d %H:%M:%S")
    rank = comm.get_rank()
    handlers = [logging.StreamHandler(sys.stderr)]
    handlers[0].setLevel(logging.WARNING)
    if rank == 0:
        info = logging.StreamHandler(sys.stdout)
        info.addFilter(lambda record: record.levelno < logging.WARNING)
        handlers.append(info)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        name = "log.txt" if rank == 0 else "log.txt.rank{}".format(rank)
        handlers.append(logging.FileHandler(os.path.join(output_dir, name)))
    for h in handlers:
        h.setFormatter(formatter)
        plugin.addHandler(h)
    plugin._ewth_configured = True


def _center_loss_of(model):
    if isinstance(model, DistributedDataParallel):
        model = model.module
    return getattr(model, "center_loss", None)


class EWTHTrainer(DefaultTrainer):
    """fastreid's ``DefaultTrainer`` with the device fallbacks, schedule, center-loss optimizer and
    evaluator of fastreid_ewth.

    Attributes (besides DefaultTrainer's):
        center_optimizer: the centers' SGD when ``CenterLoss`` is trained, else ``None``.
        training_state: the ``TrainingState`` saved with every checkpoint.
        data_loader: a ``ResumableLoader`` over fastreid's training loader.
    """

    def __init__(self, cfg):
        _log_to_output_dir(cfg.OUTPUT_DIR)
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
        self.training_state = TrainingState(self)
        self.checkpointer.checkpointables["training_state"] = self.training_state
        if self.grad_scaler is not None:
            # its loss scale decides which of the next steps are skipped: part of an exact resume
            self.checkpointer.checkpointables["grad_scaler"] = self.grad_scaler
        self.model.register_forward_hook(NonFiniteLossGuard(self))

    # DefaultTrainer builds a plain fastreid Checkpointer inline; every checkpointer given to the trainer is
    # turned into an AtomicCheckpointer over the same model and checkpointables, so every save is atomic.
    @property
    def checkpointer(self):
        return self._checkpointer

    @checkpointer.setter
    def checkpointer(self, value):
        self._checkpointer = AtomicCheckpointer.adopt(value)

    def build_hooks(self):
        """DefaultTrainer's hooks, with its main-process checkpoint hook replaced by ``ResumableCheckpointer``
        on every process, at the same place (after evaluation, before the writers)."""
        built = super().build_hooks()
        checkpoint_hook = ResumableCheckpointer(self.checkpointer, self.cfg.SOLVER.CHECKPOINT_PERIOD)
        hooks = []
        for h in built:
            if isinstance(h, fastreid_hooks.PeriodicCheckpointer):
                continue
            hooks.append(h)
            if isinstance(h, fastreid_hooks.EvalHook):
                hooks.append(checkpoint_hook)
        if checkpoint_hook not in hooks:
            hooks.append(checkpoint_hook)
        return hooks

    def resume_or_load(self, resume=True):
        """fastreid's ``resume_or_load``, continuing exactly where the checkpoint was written.

        With ``resume`` and a ``last_checkpoint`` in ``OUTPUT_DIR``: the model, optimizers, schedulers and
        grad scaler are loaded, training continues at the epoch after the saved one, the data stream skips
        the batches already trained on, and (when training starts) every process gets back the random state
        it had. Otherwise ``MODEL.WEIGHTS`` (if any) is loaded into the model only.
        """
        resuming = resume and self.checkpointer.has_checkpoint()
        if resuming and comm.is_main_process():
            remove_stale_temporaries(self.checkpointer.save_dir)
        extra = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if not resuming:
            return
        self.start_epoch = extra.get("epoch", -1) + 1
        start_iter = self.start_epoch * self.iters_per_epoch
        state = self.training_state.loaded
        if state is None:
            logger.warning("%s has no training_state (written by fastreid or an older fastreid_ewth): resuming at "
                           "epoch %d with the batches that follow, but with fresh random states, so not exactly "
                           "as the interrupted run would have gone on.", self.checkpointer.get_checkpoint_file(),
                           self.start_epoch)
        else:
            if state["iteration"] != start_iter:
                logger.warning("The checkpoint was written at iteration %d, but epoch %d starts at iteration %d: "
                               "resuming at the epoch boundary.", state["iteration"], self.start_epoch, start_iter)
            if state["batch"] != self.data_loader.batch_size:
                logger.warning("The checkpoint was written with %d images per process and step, this run has %d "
                               "(SOLVER.IMS_PER_BATCH / processes): the data stream is not the interrupted run's.",
                               state["batch"], self.data_loader.batch_size)
            self.data_loader.seeds = state["data"]
            self.training_state.best_metric = max(self.training_state.best_metric, float(extra.get("metric", -1)))
        self.data_loader.resume_at(start_iter)
        logger.info("Resuming at epoch %d (iteration %d): the data stream skips the %d batches already trained on.",
                    self.start_epoch, start_iter, start_iter)

    def before_train(self):
        super().before_train()
        # last, after every hook's before_train: the step that follows sees the random state the
        # interrupted run had after its checkpoint, as that run's next step did
        self.training_state.restore_random_state()

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
    def build_train_loader(cls, cfg):
        return make_resumable(super().build_train_loader(cfg))

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer, iters_per_epoch):
        return build_epoch_scheduler(cfg, optimizer, iters_per_epoch)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        return data_loader, EWTHReidEvaluator(cfg, num_query, output_dir)
