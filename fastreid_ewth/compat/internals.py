"""Named reaches into fastreid 1.4.0 where it offers no public seam.

Each function says which behaviour of fastreid 1.4.0 it relies on; ``tests/test_compat.py`` has a test for
each that fails when that behaviour changes. Importing this module imports nothing of fastreid: the
functions import what they need when called (``compat.apply()`` must run before fastreid is imported).
"""
import torch

__all__ = [
    "build_optimizer_without", "checkpointer_property", "datasets_root", "jaccard_search_option",
    "load_checkpoint_file", "registered_datasets", "registry_names", "sampler_seed", "set_local_process_group",
    "set_sampler_seed", "set_warmup_iters", "call_before_write_metrics", "call_after_write_metrics",
    "close_loader_iterator", "last_eval_results", "trainer_hooks",
]


def set_local_process_group(group):
    """Make ``group`` fastreid's group of the processes on this machine.

    Relies on: ``fastreid.utils.comm.get_local_rank()`` / ``get_local_size()`` read the module global
    ``comm._LOCAL_PROCESS_GROUP``, which only fastreid's own (NCCL) launch worker sets. A launch of our own
    (gloo on CPU) must set it the same way.
    """
    from fastreid.utils import comm

    if not hasattr(comm, "_LOCAL_PROCESS_GROUP"):
        raise RuntimeError("fastreid.utils.comm has no _LOCAL_PROCESS_GROUP: this fastreid is not 1.4.0; "
                           "multi-process runs on CPU cannot tell fastreid the local process group")
    comm._LOCAL_PROCESS_GROUP = group


def sampler_seed(sampler):
    """The seed of one of fastreid's training samplers, or ``None`` for a sampler without one.

    Relies on: fastreid 1.4.0's training samplers (``TrainingSampler``, ``NaiveIdentitySampler``,
    ``BalancedIdentitySampler``, ``SetReWeightSampler``, ...) keep the seed shared by all processes in
    ``self._seed`` and call ``np.random.seed(self._seed)`` each time their index stream starts.
    """
    seed = getattr(sampler, "_seed", None)
    return None if seed is None else int(seed)


def set_sampler_seed(sampler, seed):
    """Make the next index stream of ``sampler`` start from ``seed`` (see :func:`sampler_seed`).

    Returns False, and changes nothing, for a sampler without a seed of its own.

    Relies on: the samplers' ``self._seed``, as :func:`sampler_seed`; a new seed takes effect when the next
    index stream starts (fastreid reseeds numpy from it there).
    """
    if not hasattr(sampler, "_seed"):
        return False
    sampler._seed = int(seed)
    return True


def datasets_root():
    """The folder fastreid reads datasets from: ``$FASTREID_DATASETS`` as it was when fastreid was imported.

    Relies on: ``fastreid.data.build`` reads the variable once, at import, into ``_root`` (default
    ``"datasets"``), and builds every train and test set with ``root=_root``.
    """
    from fastreid.data import build

    return build._root


def registry_names(registry):
    """Sorted names registered in a fastreid ``Registry`` (``DATASET_REGISTRY``, ``LOSS_REGISTRY``, ...).

    Relies on: fastreid's ``Registry`` keeps its entries in ``_obj_map`` and offers no way to list them.
    """
    return sorted(registry._obj_map)


def registered_datasets():
    """Sorted names of the datasets in fastreid's ``DATASET_REGISTRY``.

    Relies on: what :func:`registry_names` relies on.
    """
    from fastreid.data.datasets import DATASET_REGISTRY

    return registry_names(DATASET_REGISTRY)


def checkpointer_property(wrap):
    """A ``checkpointer`` class attribute for a ``DefaultTrainer`` subclass that stores ``wrap(value)``.

    Relies on: fastreid 1.4.0's ``DefaultTrainer.__init__`` builds its ``Checkpointer`` inline (there is no
    ``build_checkpointer`` to override) and assigns it to ``self.checkpointer``, after which the hooks and
    ``resume_or_load`` read that attribute. A property intercepts the assignment, so every checkpointer the
    trainer is given is replaced by ``wrap(checkpointer)`` before anything uses it.
    """

    def get(self):
        try:
            return self.__dict__["_wrapped_checkpointer"]
        except KeyError:
            raise AttributeError("checkpointer") from None

    def set(self, value):
        self.__dict__["_wrapped_checkpointer"] = wrap(value)

    return property(get, set, doc="fastreid's checkpointer, replaced by {}".format(
        getattr(wrap, "__qualname__", repr(wrap))))


def build_optimizer_without(build, cfg, model, parameters):
    """``build(cfg, model)`` (fastreid's ``build_optimizer``) with ``parameters`` left out of the optimizer.

    Relies on: fastreid 1.4.0's ``build_optimizer`` collects only the parameters with ``requires_grad``.
    They are hidden from it (``requires_grad`` False) for the duration of the call and get it back after, so
    they still receive gradients and can be stepped by an optimizer of their own.
    """
    hidden = [p for p in parameters if p.requires_grad]
    for p in hidden:
        p.requires_grad_(False)
    try:
        return build(cfg, model)
    finally:
        for p in hidden:
            p.requires_grad_(True)


def set_warmup_iters(trainer, iterations):
    """Set the warm-up length (in iterations) the LR hook of ``trainer`` uses.

    Relies on: fastreid 1.4.0's ``DefaultTrainer.__init__`` copies ``SOLVER.WARMUP_ITERS`` into
    ``self.warmup_iters``, and its ``LRScheduler`` hook reads ``trainer.warmup_iters`` at every step to
    choose between the warm-up and the main scheduler.
    """
    if not hasattr(trainer, "warmup_iters"):
        raise RuntimeError("the trainer has no warmup_iters: set_warmup_iters must run after "
                           "DefaultTrainer.__init__ of fastreid 1.4.0")
    trainer.warmup_iters = int(iterations)


def jaccard_search_option():
    """The ``search_option`` to pass to fastreid's ``compute_jaccard_distance`` (k-reciprocal re-ranking).

    Relies on: fastreid 1.4.0's ``compute_jaccard_distance`` defaults to ``search_option=0``, a faiss GPU
    search that needs CUDA and a GPU build of faiss; option 3 is its exact CPU search (the same k nearest
    neighbours). GPU search where it can run, else the CPU one.
    """
    import faiss

    if torch.cuda.is_available() and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return 0
    return 3


def load_checkpoint_file(path_or_file):
    """Load a fastreid checkpoint (``model_XXXX.pth``) to the CPU.

    Relies on: fastreid 1.4.0's checkpoints hold the scheduler and iteration state as plain Python objects,
    which torch >= 2.6's default ``torch.load(weights_only=True)`` refuses. The files are the user's own runs,
    so they are loaded as fastreid 1.4.0 loaded them.
    """
    return torch.load(path_or_file, map_location=torch.device("cpu"), weights_only=False)


def call_before_write_metrics(trainer, callback):
    """Make ``callback()`` run at the start of every training step's metrics write of ``trainer``.

    Relies on: fastreid 1.4.0's ``DefaultTrainer.__init__`` keeps the ``SimpleTrainer`` (``AMPTrainer`` with
    AMP) that does the work of each step in ``self._trainer``, and ``DefaultTrainer.run_step`` runs that one's
    ``run_step``, which on every process calls ``self._write_metrics(loss_dict, data_time)`` once per step,
    after ``losses.backward()`` and before the optimizer (and grad scaler) step. ``_write_metrics`` is where
    fastreid synchronises with the device (``.cpu().item()`` of every loss) and gathers the metrics of all
    processes; on the main process it raises ``FloatingPointError`` for a non-finite total. ``callback`` runs
    before all of that, on every process.

    Returns False, and changes nothing, when ``trainer`` has no such inner trainer (e.g. a stand-in). Its
    test is in ``tests/test_reliability.py`` (the non-finite-loss guard is its one user).
    """
    return _wrap_write_metrics(trainer, before=lambda loss_dict: callback())


def call_after_write_metrics(trainer, callback):
    """Make ``callback(loss_dict)`` run at the end of every training step's metrics write of ``trainer``.

    Relies on: what :func:`call_before_write_metrics` relies on, and that fastreid's ``_write_metrics`` puts
    ``total_loss`` (the sum of the step's losses, averaged over processes) into the ``EventStorage`` on the
    main process, and each loss under its own name only when there are more than one. ``callback`` runs on
    every process after the write; returns False, and changes nothing, without an inner trainer.
    """
    return _wrap_write_metrics(trainer, after=callback)


def _wrap_write_metrics(trainer, before=None, after=None):
    from fastreid.engine.train_loop import SimpleTrainer

    inner = getattr(trainer, "_trainer", None)
    if not isinstance(inner, SimpleTrainer):
        return False
    write_metrics = inner._write_metrics

    def _write_metrics(loss_dict, data_time):
        if before is not None:
            before(loss_dict)
        result = write_metrics(loss_dict, data_time)
        if after is not None:
            after(loss_dict)
        return result

    inner._write_metrics = _write_metrics
    return True


def trainer_hooks(trainer):
    """The hooks registered on ``trainer``, in the order they run (a list; do not modify it).

    Relies on: fastreid 1.4.0's ``TrainerBase.register_hooks`` appends them to ``trainer._hooks``, which
    ``before_train``, ``after_step``, ... iterate; there is no public accessor.
    """
    return trainer._hooks


def last_eval_results(trainer):
    """What fastreid's ``DefaultTrainer.train`` returns at the end of a training on the main process.

    Relies on: fastreid 1.4.0's ``DefaultTrainer.test`` (run by its ``EvalHook``) stores its results in
    ``trainer._last_eval_results``, and ``train`` returns that attribute, asserting that it exists.
    """
    if not hasattr(trainer, "_last_eval_results"):
        raise AssertionError("No evaluation results obtained during training!")
    return trainer._last_eval_results


def close_loader_iterator(iterator):
    """Stop the worker processes (and, on GPU, the prefetching thread) of a training loader's iterator now.

    Relies on: fastreid 1.4.0's ``DataLoaderX.__iter__`` returns the loader itself, prefetching from
    ``loader.iter``, a ``BackgroundGenerator`` thread over torch's iterator (``.generator``), and stops the
    thread with ``_shutdown_background_thread``; torch's multi-process iterator stops its workers with
    ``_shutdown_workers`` (what its ``__del__`` calls), which a plain ``DataLoader``'s iterator is on CPU.
    """
    inner = iterator
    background = getattr(iterator, "iter", None)
    if background is not None and hasattr(iterator, "_shutdown_background_thread"):
        iterator._shutdown_background_thread()
        inner = getattr(background, "generator", None)
    shutdown = getattr(inner, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
