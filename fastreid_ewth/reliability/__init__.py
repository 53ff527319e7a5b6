"""Runs that survive: atomic checkpoints, exact resume, a non-finite-loss guard, multi-process launch, one
training per output folder.

Opt-in and independent of the recipe: mix :class:`ReliableTraining` in front of fastreid's stock
``DefaultTrainer`` or any subclass of it::

    from fastreid.engine import DefaultTrainer
    from fastreid_ewth.reliability import ReliableTraining

    class Trainer(ReliableTraining, DefaultTrainer):
        pass

What each piece does, and where it lives:

- :mod:`.checkpoint`: ``AtomicCheckpointer``, every checkpoint and the ``last_checkpoint`` pointer
  written whole or not at all; ``describe_checkpoint_problem``, what a file that is not a checkpoint is;
- :mod:`.resume`: ``--resume`` continues the interrupted run exactly (random states of every process,
  the data stream's position and seeds, the grad scaler with AMP), from the newest intact checkpoint;
- :mod:`.preempt`: SIGTERM, SIGUSR1, SIGUSR2 or Ctrl-C stop the run after its current step with a checkpoint
  of that iteration and exit status ``EXIT_INTERRUPTED`` (75); ``--resume`` continues mid-epoch;
- :mod:`.nan_guard`: a non-finite loss stops every process before the weights change, after saving
  the last good state;
- :mod:`.launch`: fastreid's launch on GPUs (NCCL), the same on CPU with gloo;
- :mod:`.lock`: a training's lock on its ``OUTPUT_DIR`` (taken by ``engine.setup_cfg``, for the trainer's
  whole life), so that a second training into the same folder is refused.
"""
from fastreid.utils import comm

from .. import compat
from .checkpoint import AtomicCheckpointer, DamagedCheckpointError, NoResumeCheckpointError, describe_checkpoint_problem
from .launch import default_backend, launch
from .lock import OutputDirInUseError, hold_output_dir, release_output_dir
from .nan_guard import NonFiniteLossError, NonFiniteLossGuard
from .preempt import (EXIT_INTERRUPTED, STOP_SIGNALS, TrainingInterrupted, shielded_workers, stop_requests,
                      train_loop)
from .resume import TrainingState, make_resumable, resume_or_load, with_resumable_checkpointer

__all__ = ["ReliableTraining", "EXIT_INTERRUPTED", "STOP_SIGNALS", "TrainingInterrupted", "AtomicCheckpointer", "DamagedCheckpointError", "NoResumeCheckpointError",
           "NonFiniteLossError", "NonFiniteLossGuard", "OutputDirInUseError", "TrainingState", "default_backend",
           "describe_checkpoint_problem", "hold_output_dir", "launch", "release_output_dir"]


class ReliableTraining:
    """Mixin for fastreid's ``DefaultTrainer`` (put it first among the bases). Overrides:

    - ``checkpointer``: the checkpointer fastreid builds becomes an ``AtomicCheckpointer`` over the same
      model and checkpointables (``compat.checkpointer_property``);
    - ``__init__``: adds ``training_state`` (and the grad scaler under AMP) to what every checkpoint holds,
      and puts the ``NonFiniteLossGuard`` on the model;
    - ``build_train_loader``: fastreid's loader, made resumable at any batch, its workers left alone by
      stop signals (``build_test_loader``: the same for evaluation's);
    - ``build_hooks``: fastreid's hooks, with a checkpoint hook on every process that gathers their state;
    - ``train``: fastreid's loop, starting at any step and stopping on a signal with a checkpoint;
    - ``resume_or_load`` and ``before_train``: resume exactly.
    """

    checkpointer = compat.checkpointer_property(AtomicCheckpointer.from_checkpointer)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.training_state = TrainingState(self)
        self.checkpointer.checkpointables["training_state"] = self.training_state
        if self.grad_scaler is not None:
            # its loss scale decides which of the next steps are skipped: part of an exact resume
            self.checkpointer.checkpointables["grad_scaler"] = self.grad_scaler
        self.model.register_forward_hook(NonFiniteLossGuard(self))

    @classmethod
    def build_train_loader(cls, cfg):
        return make_resumable(super().build_train_loader(cfg))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        loader, num_query = super().build_test_loader(cfg, dataset_name)
        return shielded_workers(loader), num_query

    def build_hooks(self):
        return with_resumable_checkpointer(super().build_hooks(), self.checkpointer,
                                           self.cfg.SOLVER.CHECKPOINT_PERIOD)

    def resume_or_load(self, resume=True):
        resume_or_load(self, resume)

    def train(self):
        """fastreid's ``DefaultTrainer.train``, from any step (a mid-epoch resume), stopping with a
        checkpoint on a stop signal (:mod:`.preempt`); returns the last evaluation's results (main process)."""
        with stop_requests().installed() as requests:
            train_loop(self, requests)
        if comm.is_main_process():
            return compat.last_eval_results(self)
        return None

    def before_train(self):
        super().before_train()
        # last, after every hook's before_train: the step that follows sees the random state the
        # interrupted run had after its checkpoint, as that run's next step did
        self.training_state.restore_random_state()
