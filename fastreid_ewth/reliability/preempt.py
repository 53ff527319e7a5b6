"""Stop on a signal without losing work: finish the step, checkpoint that iteration, exit with ``EXIT_INTERRUPTED``.

A cluster warns a job before it ends it: SLURM sends SIGTERM when it pre-empts a job and a chosen signal
(``sbatch --signal``; submitit asks for SIGUSR2) before the time limit; a person presses Ctrl-C (SIGINT).
During a training, each of ``STOP_SIGNALS`` only records a request. The training loop acts on it after the
step in progress: it writes ``model_interrupted.pth`` (atomically, with everything an exact resume needs:
model, optimizers, schedulers, grad scaler, every process's random state, the data stream's position) and
points ``last_checkpoint`` at it, then ends with exit status ``EXIT_INTERRUPTED`` (75). ``--resume``
continues at the next iteration, mid-epoch, as if the run had never stopped.

- Several processes: the request is shared after every step (one all-reduce of a number), so all of them
  stop after the same iteration, whichever of them got the signal; rank 0 writes, all wait for the write,
  then all exit. The launching process forwards a signal it receives to them and exits with their status.
- A second signal while stopping (during the save, say) is reported and ignored: the checkpoint is written
  whole or not at all, and the run still exits with ``EXIT_INTERRUPTED``.
- The data loaders' worker processes ignore these signals (SLURM and Ctrl-C signal them too), so that a
  batch being loaded is not lost; a SIGTERM from the training process itself still ends them.
- A signal during the set-up (before the first step) or right after a resume stops the run before it trains,
  with nothing to save and the same exit status. An evaluation in progress is finished first: leave enough
  time between the warning signal and the kill (``--signal-delay`` of ``tools/reproduce.py --launcher slurm``).

fastreid's ``TrainerBase.train`` always starts at the first step of an epoch and has no place between steps
for a stop, so :func:`train_loop` is that loop with both; everything else (hooks, ``run_step``) is fastreid's.
"""
import contextlib
import logging
import multiprocessing
import os
import signal
import threading

import torch
import torch.distributed as dist

from fastreid.engine.hooks import EvalHook
from fastreid.utils import comm
from fastreid.utils.events import EventStorage

from .. import compat
from ..files import INTERRUPTED, LAST_CHECKPOINT

logger = logging.getLogger(__name__)

__all__ = ["EXIT_INTERRUPTED", "STOP_SIGNALS", "StopRequests", "TrainingInterrupted", "forwarding_stop_signals",
           "shielded_workers", "stop_requests", "train_loop"]

#: The signals that stop a training after its current step, with a checkpoint.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)

#: Exit status of a training stopped by one of ``STOP_SIGNALS`` (after writing its checkpoint, when it had
#: trained since it started): sysexits' EX_TEMPFAIL, "try again later" -- with ``--resume``.
EXIT_INTERRUPTED = 75


class TrainingInterrupted(SystemExit):
    """Raised by the training loop after a stop signal; exits the process with ``EXIT_INTERRUPTED``.

    ``signal_name`` is the signal's name, ``checkpoint`` the file written (``None``: nothing was trained
    since the run started, so there was nothing to save). A ``SystemExit``: like Ctrl-C's
    ``KeyboardInterrupt``, it is not an error of the training, and ``except Exception`` does not catch it.
    """

    def __init__(self, signal_name, checkpoint=None):
        super().__init__(EXIT_INTERRUPTED)
        self.signal_name = signal_name
        self.checkpoint = checkpoint


def _name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal {}".format(signum)


class StopRequests:
    """Signal handlers that turn the first of ``STOP_SIGNALS`` into a request (``signum``), acted on between
    training steps. One per process: :func:`stop_requests`."""

    def __init__(self):
        self.signum = None
        self._previous = None

    @property
    def active(self):
        """Whether the handlers are installed (and so forked children ignore the signals)."""
        return self._previous is not None

    @contextlib.contextmanager
    def installed(self):
        """Install the handlers for the block (nested uses share the outermost one's requests).

        Outside the main thread Python cannot install signal handlers: the block then runs with the
        signals' usual effect, and a warning says so.
        """
        if self.active:
            yield self
            return
        if threading.current_thread() is not threading.main_thread():
            logger.warning("Training outside the main thread: a stop signal (SIGTERM, SIGUSR1/2, Ctrl-C) will not "
                           "write a checkpoint first.")
            yield self
            return
        self.signum = None
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        try:
            yield self
        finally:
            previous, self._previous = self._previous, None
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _handle(self, signum, frame):
        # a signal handler: no logging (its lock may be held by the code interrupted), one write to stderr
        if self.signum is None:
            self.signum = signum
            message = ("\n{}: stopping after the current training step, with a checkpoint "
                       "(exit status {}).\n".format(_name(signum), EXIT_INTERRUPTED))
        else:
            message = "\n{}: already stopping ({} first); the checkpoint is being written.\n".format(
                _name(signum), _name(self.signum))
        try:
            os.write(2, message.encode())
        except OSError:
            pass

    def agreed(self):
        """The signal every process acts on (0: none). A collective with several processes."""
        local = int(self.signum or 0)
        if comm.get_world_size() == 1:
            return local
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([local], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


_REQUESTS = StopRequests()


def stop_requests():
    """This process's :class:`StopRequests`."""
    return _REQUESTS


def _ignore_stop_signals_in_child():
    # a forked child of a training leaves stopping to the training process; SIGTERM stays what it was, so
    # that the training process can still end the child (multiprocessing does, at exit)
    if _REQUESTS.active:
        for s in STOP_SIGNALS:
            if s != signal.SIGTERM:
                signal.signal(s, signal.SIG_IGN)


os.register_at_fork(after_in_child=_ignore_stop_signals_in_child)


def _obey_sigterm_from_parent_only():
    """In a loader worker: a SIGTERM from the training process ends the worker (torch's shutdown, or
    multiprocessing's at exit), one from anyone else (SLURM, ``kill`` of the process group) is ignored.

    Python's handlers do not see who sent a signal, so SIGTERM is blocked and a thread takes it with
    ``sigwaitinfo``, which does (``si_pid``). Where that call does not exist (macOS), torch's own handler
    stays: a SIGTERM to the worker from outside then fails the training as it would without this package.
    """
    if not hasattr(signal, "sigwaitinfo"):
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def watch():
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
                os._exit(0)  # as torch's worker handler does for its parent's SIGTERM

    threading.Thread(target=watch, name="sigterm-from-parent", daemon=True).start()


class _IgnoringStopSignals:
    """A loader's ``worker_init_fn`` that first shields the worker from the stop signals (when its training
    process handles them), then calls the loader's own. It runs after torch has given the worker its own
    SIGTERM handler (which lets a SIGTERM from anyone but the training process kill the worker)."""

    def __init__(self, init):
        self.init = init

    def __call__(self, worker_id):
        if _REQUESTS.active:
            _ignore_stop_signals_in_child()
            _obey_sigterm_from_parent_only()
        if self.init is not None:
            self.init(worker_id)


def shielded_workers(loader):
    """``loader`` (a torch ``DataLoader``) with workers that leave stop signals to the training process."""
    if not isinstance(loader.worker_init_fn, _IgnoringStopSignals):
        loader.worker_init_fn = _IgnoringStopSignals(loader.worker_init_fn)
    return loader


@contextlib.contextmanager
def forwarding_stop_signals():
    """In a launcher of training processes: pass each stop signal it receives on to them (its
    ``multiprocessing`` children), instead of dying or raising ``KeyboardInterrupt``, for the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum, frame):
        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signum)
            except OSError:
                pass

    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def train_loop(trainer, requests):
    """fastreid's ``TrainerBase.train`` for ``trainer``, from any step of its first epoch, stopping with a
    checkpoint when ``requests`` has a signal (checked after every step and every epoch).

    ``trainer.start_epoch`` is the first epoch to train (or finish); training starts at the iteration
    ``trainer.resume_iteration`` that a resume from a mid-epoch checkpoint sets, else at that epoch's first.
    """
    per_epoch = trainer.iters_per_epoch
    first_epoch = trainer.start_epoch
    start_iter = getattr(trainer, "resume_iteration", None)
    if start_iter is None:
        start_iter = first_epoch * per_epoch
    offset = start_iter - first_epoch * per_epoch  # steps of the first epoch already done (0 .. per_epoch)
    logger.info("Starting training from epoch {}{}".format(
        first_epoch, ", after its step {} of {}".format(offset, per_epoch) if offset else ""))
    trainer.iter = trainer.start_iter = start_iter
    with EventStorage(start_iter) as trainer.storage:
        try:
            trainer.before_train()
            _stop_if_requested(trainer, requests, epoch_done=False)
            for trainer.epoch in range(first_epoch, trainer.max_epoch):
                trainer.before_epoch()
                for _ in range(offset if trainer.epoch == first_epoch else 0, per_epoch):
                    trainer.before_step()
                    trainer.run_step()
                    trainer.after_step()
                    trainer.iter += 1
                    _stop_if_requested(trainer, requests, epoch_done=False)
                trainer.after_epoch()
                _stop_if_requested(trainer, requests, epoch_done=True)
        except TrainingInterrupted:
            # the hooks close their writers; fastreid's EvalHook would evaluate a model stopped in its last
            # epoch as if the training had ended
            trainer.storage.iter = trainer.iter
            for hook in compat.trainer_hooks(trainer):
                if not isinstance(hook, EvalHook):
                    hook.after_train()
            raise
        except Exception:
            logger.exception("Exception during training:")
            trainer.after_train()
            raise
        finally:
            trainer.data_loader.close()
        trainer.after_train()


def _stop_if_requested(trainer, requests, epoch_done):
    signum = requests.agreed()
    if not signum:
        return
    name = _name(signum)
    iteration = int(trainer.iter)
    per_epoch = trainer.iters_per_epoch
    path = None
    if iteration > trainer.start_iter:
        # fastreid's "epoch" of a checkpoint is the last epoch whose end (evaluation, scheduler step) has run
        completed = int(trainer.epoch) if epoch_done else int(trainer.epoch) - 1
        _sync_best_metric(trainer)
        trainer.training_state.collect()
        trainer.checkpointer.save(INTERRUPTED, epoch=completed, iteration=iteration)
        path = os.path.join(trainer.checkpointer.save_dir, INTERRUPTED + ".pth")
    comm.synchronize()  # every rank waits for rank 0's write before any exits (train_loop closes the loader)
    if epoch_done:
        where = "iteration {} (the end of epoch {})".format(iteration, trainer.epoch)
    elif iteration == trainer.start_iter:
        where = "iteration {}".format(iteration)
    else:
        where = "iteration {} (epoch {}, step {} of {})".format(
            iteration, trainer.epoch, iteration - trainer.epoch * per_epoch, per_epoch)
    if path is None:
        logger.warning("Stopped by %s at %s, before training anything since the start: nothing to save. Exit "
                       "status %d; rerun with --resume to continue.", name, where, EXIT_INTERRUPTED)
    else:
        logger.warning("Stopped by %s after %s: saved %s and pointed %s at it. Exit status %d; rerun the same "
                       "command with --resume to continue from the next step.", name, where, path,
                       LAST_CHECKPOINT, EXIT_INTERRUPTED)
    raise TrainingInterrupted(name, path)


def _sync_best_metric(trainer):
    # the best metric so far, kept by the checkpoint hook, goes into the checkpoint as at an epoch's end
    from .resume import ResumableCheckpointer

    for hook in compat.trainer_hooks(trainer):
        if isinstance(hook, ResumableCheckpointer):
            trainer.training_state.best_metric = hook.best_metric
