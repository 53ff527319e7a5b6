"""Exact resume: a run continued from its last checkpoint goes on as if it had never stopped.

fastreid saves the model, the optimizer, the schedulers and the epoch. A run restarted from that repeats
the random numbers of a fresh start and replays its sampler from the first batch, so it trains on other
batches with other augmentations than the run it continues. Everything that closes the gap lives here:

- ``TrainingState``: one more checkpointable with the random state of every process (Python, numpy,
  torch CPU and CUDA), the iteration, the seeds of the data stream and the best metric so far;
- ``ResumableCheckpointer``: fastreid's periodic checkpoint hook, gathering that state from every process;
- ``make_resumable`` / ``ResumableLoader``: a training loader that restarts at any batch;
- ``resume_or_load`` and ``restore_random_state``: what the trainer does with them when it starts.

The data stream, in detail.
fastreid's training samplers are infinite index streams seeded once (``np.random.seed(seed)`` when the
stream starts) that then draw from numpy's *global* generator, which the augmentations, the evaluation
and everything else in the process also draw from. Two consequences for a resumed run: the stream
cannot be saved (it lives in a generator's local variables), and even replaying it from its seed does
not give the original batches, because the original run interleaved other draws with it. The
augmentations have the same problem one level down: they draw from the global generators of whichever
process loads the image (the trainer with ``NUM_WORKERS 0``, a loader worker otherwise, each worker
seeded once when it starts).

``make_resumable`` wraps fastreid's loader so that

- the sampler draws from private copies of numpy's, torch's and Python's generators (swapped in while it
  draws, a chunk of indices at a time), so its stream depends only on its seed: a restarted run
  fast-forwards it by the number of samples already trained on (indices only: no image is read) and
  continues with the same batches;
- every sample is augmented with generators seeded from ``(seed, rank, position in the stream)``, so the
  augmentation of the n-th sample is the same whatever ``DATALOADER.NUM_WORKERS`` is, and after a resume;
- the loader's iterator (and its worker processes) starts at the first batch actually requested, with
  the trainer's generators left as they were, so creating it consumes no random number of the run.
"""
import collections
import contextlib
import itertools
import logging
import os
import random
import weakref

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from fastreid.data.build import build_reid_train_loader
from fastreid.engine import hooks as fastreid_hooks
from fastreid.utils import comm

from .. import compat
from ..files import INTERRUPTED, LAST_CHECKPOINT, remove_stale_temporaries
from .checkpoint import NoResumeCheckpointError
from .preempt import shielded_workers

logger = logging.getLogger(__name__)

__all__ = ["TrainingState", "ResumableCheckpointer", "ResumableLoader", "ResumableSampler", "SeededSamples",
           "capture_rng_state", "make_resumable", "restore_rng_state", "resume_or_load",
           "with_resumable_checkpointer"]


FORMAT = 1


def capture_rng_state():
    """This process's global random state, as plain Python values and tensors.

    No numpy objects, so that a checkpoint stays loadable with ``torch.load(weights_only=True)``.
    """
    version, numpy_keys, numpy_pos, has_gauss, cached_gauss = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": {"kind": version, "keys": torch.from_numpy(numpy_keys.astype(np.int64)), "pos": int(numpy_pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gauss)},
        "torch": torch.get_rng_state(),
    }
    # never initialise CUDA just to read its state: a CPU run has none, a GPU run has initialised it
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state):
    """Set this process's global random state to ``state`` (from ``capture_rng_state``)."""
    random.setstate(_as_python_state(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning("The checkpoint holds the CUDA random state of %d device(s), this process sees %d: "
                           "CUDA random numbers will differ from the interrupted run.", len(cuda),
                           torch.cuda.device_count())


def _as_python_state(value):
    # random.setstate wants (version, tuple of 625 ints, gauss_next); a list may come back from serialisation
    version, internal, gauss_next = value
    return version, tuple(internal), gauss_next


class TrainingState:
    """Checkpointable with the parts of a run fastreid does not save. One per trainer.

    ``state_dict()`` (on the main process, when the checkpointer saves) returns::

        {"format": 1, "iteration": iterations done, "world_size": W, "batch": images per process and step,
         "rng": [random state of rank 0, ..., rank W-1] (None for a rank not gathered),
         "data": {"sampler": seed, "samples": seed}, "best_metric": float}

    ``collect()`` must be called on all processes together just before a save, so that the random state
    of every rank reaches the main process. ``load_state_dict`` keeps the loaded state in ``loaded``; the
    trainer applies it when training starts (``restore_random_state``).
    """

    def __init__(self, trainer):
        self._trainer = weakref.proxy(trainer)  # the trainer owns the checkpointer that owns this
        self._gathered = None  # (iteration, [state of each rank]) from the last collect()
        self.loaded = None
        self.best_metric = -1.0

    def collect(self):
        """Gather every process's random state to the main process. Call on every process at the same point."""
        self._gathered = (int(getattr(self._trainer, "iter", 0)), comm.gather(capture_rng_state(), dst=0))

    def state_dict(self):
        world_size = comm.get_world_size()
        iteration = int(getattr(self._trainer, "iter", 0))  # a save before train() (no iteration yet) is at 0
        if world_size == 1:
            rng = [capture_rng_state()]
        elif self._gathered is not None and self._gathered[0] == iteration and self._gathered[1]:
            rng = self._gathered[1]
        else:  # a save outside the periodic hook (e.g. the non-finite-loss snapshot): only this rank's
            rng = [capture_rng_state() if r == comm.get_rank() else None for r in range(world_size)]
        loader = self._trainer.data_loader
        return {"format": FORMAT, "iteration": iteration, "world_size": world_size, "batch": int(loader.batch_size),
                "rng": rng, "data": dict(loader.seeds), "best_metric": float(self.best_metric)}

    def load_state_dict(self, state):
        if state.get("format") != FORMAT:
            raise ValueError("training_state format {!r} in the checkpoint is not {} (written by another version of "
                             "fastreid_ewth); resume without it by deleting the key, or start a new OUTPUT_DIR"
                             .format(state.get("format"), FORMAT))
        self.loaded = state
        self.best_metric = float(state.get("best_metric", -1.0))

    def restore_random_state(self):
        """Give this process the random state it had when the loaded checkpoint was written (once)."""
        state, self.loaded = self.loaded, None
        if state is None:
            return
        rank, world_size = comm.get_rank(), comm.get_world_size()
        saved = state["rng"]
        if state["world_size"] != world_size:
            logger.warning("The checkpoint was written by a run of %d process(es), this one has %d: random "
                           "states and the data stream are not those of the interrupted run (it goes on, but "
                           "not exactly as it would have).", state["world_size"], world_size)
        elif saved[rank] is None:
            logger.warning("The checkpoint holds no random state for rank %d: its random numbers will differ "
                           "from the interrupted run.", rank)
        else:
            restore_rng_state(saved[rank])
            logger.info("Restored the random state of rank %d from iteration %d.", rank, state["iteration"])


# ----------------------------------------------------------------------------------------------------
# The data stream
# ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _isolated_global_rng():
    """Run a block with Python's, numpy's and torch's (CPU) global generators, then put the caller's back."""
    outer = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(outer[0])
        np.random.set_state(outer[1])
        torch.set_rng_state(outer[2])


class _PrivateGenerators:
    """Python/numpy/torch global-generator states owned by one sampler stream, swapped in while it draws."""

    def __init__(self, seed):
        # fastreid's samplers reseed numpy themselves; the other two start from the stream's seed
        self._python = random.Random(seed).getstate()
        self._numpy = np.random.RandomState(seed % 2 ** 32).get_state()
        self._torch = torch.Generator().manual_seed(seed).get_state()

    @contextlib.contextmanager
    def active(self):
        with _isolated_global_rng():
            random.setstate(self._python)
            np.random.set_state(self._numpy)
            torch.set_rng_state(self._torch)
            try:
                yield
            finally:
                self._python, self._numpy, self._torch = random.getstate(), np.random.get_state(), torch.get_rng_state()


# indices drawn per swap of the private generators: a swap costs ~0.3 ms (numpy's state is copied four
# times), a fastreid sampler ~2 us per index, so one swap per CHUNK keeps the stream's cost near fastreid's
_CHUNK = 512


class ResumableSampler(Sampler):
    """fastreid's training sampler as a stream of ``(index, position)`` that can start at any position.

    ``position`` counts this process's samples from the start of training (0, 1, 2, ...). Set ``start`` (the
    number of samples this process already trained on) before iterating to continue a run.

    The wrapped sampler runs with the private generators swapped in, ``_CHUNK`` indices at a time: the
    stream is the one drawn index by index (nothing else draws from those generators in between), at a
    fraction of the swaps.

    Args:
        sampler: a fastreid training sampler (an infinite per-process index stream with a seed of its own,
            ``compat.sampler_seed``).
        seed (int): seed of the private generators, used when ``sampler`` has no seed of its own.
    """

    def __init__(self, sampler, seed):
        self.sampler = sampler
        self.fallback_seed = int(seed)
        self.start = 0

    @property
    def seed(self):
        """The seed the stream is drawn from (fastreid's sampler's own, shared by all processes)."""
        own = compat.sampler_seed(self.sampler)
        return self.fallback_seed if own is None else own

    @seed.setter
    def seed(self, value):
        # a resumed run must replay the stream of the run it continues, also when that one drew a random seed
        if not compat.set_sampler_seed(self.sampler, value):
            self.fallback_seed = int(value)

    def __iter__(self):
        generators = _PrivateGenerators(self.seed)
        position = self.start
        with generators.active():
            indices = iter(self.sampler)
            # skip what was trained on: indices only, no image is loaded
            collections.deque(itertools.islice(indices, position), maxlen=0)
        while True:
            with generators.active():
                chunk = list(itertools.islice(indices, _CHUNK))
            for index in chunk:
                yield index, position
                position += 1
            if len(chunk) < _CHUNK:  # a finite sampler ran out
                return


def _sample_seeds(seed, rank, position):
    """Seeds of Python's (64 bits), numpy's and torch's (32 bits each) generators for one sample of the stream.

    From numpy's ``SeedSequence`` of ``(seed, rank, position)`` (~10 us): every sample gets seeds of its own,
    unrelated to its neighbours', and the same ones in any process.
    """
    words = np.random.SeedSequence([seed, rank, position]).generate_state(4)
    return int(words[0]) << 32 | int(words[1]), int(words[2]), int(words[3])


class SeededSamples(Dataset):
    """A dataset indexed by ``(index, position)`` that augments each sample with its own seeded generators.

    ``dataset[index]`` is computed with Python's, numpy's and torch's (CPU) global generators seeded from
    ``(seed, rank, position)`` (:func:`_sample_seeds`). In the process that trains (``NUM_WORKERS 0``) the
    caller's generators are put back afterwards, once per batch (the loader asks for a batch at a time,
    ``__getitems__``). A loader worker process keeps the last sample's: nothing in it draws random numbers
    but the samples, and each sample reseeds all three first. Other attributes (``num_classes``,
    ``img_items``, ...) are the wrapped dataset's.
    """

    def __init__(self, dataset, seed, rank):
        self.dataset = dataset
        self.seed = int(seed)
        self.rank = int(rank)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys):
        if get_worker_info() is not None:
            return self._load(keys)
        with _isolated_global_rng():
            return self._load(keys)

    def _load(self, keys):
        items = []
        for index, position in keys:
            python_seed, numpy_seed, torch_seed = _sample_seeds(self.seed, self.rank, int(position))
            random.seed(python_seed)
            np.random.seed(numpy_seed)
            # the CPU generator only: torch.manual_seed would also reseed (and so change) the CUDA ones
            torch.default_generator.manual_seed(torch_seed)
            items.append(self.dataset[index])
        return items

    def __getattr__(self, name):
        # only called for names not found normally; "dataset" itself must not recurse (e.g. while unpickling)
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class _LazyIterator:
    """Creates the loader's iterator at the first ``next``, without consuming the caller's random numbers."""

    def __init__(self, loader):
        self._loader = loader
        self._iterator = None

    def close(self):
        """Stop the loader's workers now (the next ``next`` starts them again)."""
        iterator, self._iterator = self._iterator, None
        if iterator is not None:
            compat.close_loader_iterator(iterator)

    def __iter__(self):
        return self

    def __next__(self):
        if self._iterator is None:
            # a DataLoader draws its workers' base seed from torch's global generator when it starts
            with _isolated_global_rng():
                self._iterator = iter(self._loader)
        return next(self._iterator)


class ResumableLoader:
    """The training loader of a run: iterating it yields fastreid batches from ``resume_at``'s batch on.

    Everything else (``dataset``, ``batch_sampler``, ``num_workers``, ...) is the wrapped loader's.
    """

    def __init__(self, loader, sampler, batch_size):
        self.loader = loader
        self.sampler = sampler
        self.batch_size = batch_size
        self._iterators = weakref.WeakSet()

    def close(self):
        """Stop the worker processes of every iterator made from this loader (a stopping run)."""
        for iterator in list(self._iterators):
            iterator.close()

    def resume_at(self, batches):
        """Continue after ``batches`` batches of this process (iterators made from now on start there)."""
        self.sampler.start = int(batches) * self.batch_size

    @property
    def seeds(self):
        """``{"sampler": ..., "samples": ...}``: the seeds that define the batches and their augmentations."""
        return {"sampler": self.sampler.seed, "samples": self.loader.dataset.seed}

    @seeds.setter
    def seeds(self, value):
        self.sampler.seed = value["sampler"]
        self.loader.dataset.seed = value["samples"]

    def __iter__(self):
        iterator = _LazyIterator(self.loader)
        self._iterators.add(iterator)
        return iterator

    def __getattr__(self, name):
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


def make_resumable(loader):
    """Wrap a loader built by fastreid's ``build_reid_train_loader`` into a ``ResumableLoader``.

    The dataset, sampler, per-process batch size and worker count are taken from ``loader``; the new loader
    is built by the same fastreid function, so it is fastreid's prefetching loader on GPU.
    """
    batch_sampler = loader.batch_sampler
    mini_batch = batch_sampler.batch_size
    fallback = compat.sampler_seed(batch_sampler.sampler)
    if fallback is None:
        fallback = comm.shared_random_seed()  # every process draws the same one
    sampler = ResumableSampler(batch_sampler.sampler, fallback)
    dataset = SeededSamples(loader.dataset, seed=sampler.seed, rank=comm.get_rank())
    rebuilt = build_reid_train_loader(dataset, sampler=sampler, total_batch_size=mini_batch * comm.get_world_size(),
                                      num_workers=loader.num_workers)
    return ResumableLoader(shielded_workers(rebuilt), sampler, mini_batch)


# ----------------------------------------------------------------------------------------------------
# Saving and resuming
# ----------------------------------------------------------------------------------------------------
class ResumableCheckpointer(fastreid_hooks.PeriodicCheckpointer):
    """fastreid's periodic checkpoint hook, with the trainer's ``TrainingState`` gathered from every process.

    fastreid registers its checkpoint hook on the main process only. This one runs on every process, so that
    before each save all of them hand their random state to the main process (``TrainingState.collect``, a
    collective); only the main process writes (the others' checkpointer has ``save_to_disk`` False). The best
    metric before this epoch is saved too, so that a resumed run does not replace ``model_best.pth`` by a
    worse model.
    """

    def before_train(self):
        super().before_train()
        self.best_metric = max(self.best_metric, self.trainer.training_state.best_metric)

    def after_epoch(self):
        state = self.trainer.training_state
        state.best_metric = self.best_metric
        state.collect()
        super().after_epoch()
        self._remove_superseded_interruption()

    def _remove_superseded_interruption(self):
        # the checkpoint of a stop signal is only for --resume; once a later one is the resume point, it goes
        folder = self.checkpointer.save_dir
        stale = os.path.join(folder, INTERRUPTED + ".pth")
        if not comm.is_main_process() or not os.path.isfile(stale):
            return
        try:
            with open(os.path.join(folder, LAST_CHECKPOINT), encoding="utf-8", errors="replace") as f:
                pointed = f.read().strip()
        except OSError:
            return
        if pointed and pointed != INTERRUPTED + ".pth":
            os.remove(stale)


def with_resumable_checkpointer(hooks, checkpointer, period):
    """fastreid's default hooks with its main-process ``PeriodicCheckpointer`` replaced by a
    ``ResumableCheckpointer`` on every process, at the same place (after evaluation, before the writers)."""
    checkpoint_hook = ResumableCheckpointer(checkpointer, period)
    out = []
    for h in hooks:
        if isinstance(h, fastreid_hooks.PeriodicCheckpointer):
            continue
        out.append(h)
        if isinstance(h, fastreid_hooks.EvalHook):
            out.append(checkpoint_hook)
    if checkpoint_hook not in out:
        out.append(checkpoint_hook)
    return out


def resume_or_load(trainer, resume):
    """fastreid's ``resume_or_load`` for ``trainer``, continuing exactly where the checkpoint was written.

    With ``resume`` and a ``last_checkpoint`` in ``OUTPUT_DIR``: the model, optimizers, schedulers and grad
    scaler are loaded, training continues at the epoch after the saved one, the data stream skips the batches
    already trained on, and (when training starts, ``restore_random_state``) every process gets back the
    random state it had. Otherwise ``MODEL.WEIGHTS`` (if any) is loaded into the model only.

    When ``last_checkpoint`` names a file that is missing or damaged, the run continues from the newest intact
    checkpoint of ``OUTPUT_DIR``, with a warning naming both and the work trained again, or stops saying how
    to choose one (``AtomicCheckpointer.find_resume_checkpoint``).
    """
    checkpointer = trainer.checkpointer
    resuming = resume and checkpointer.has_checkpoint()
    if not resuming:
        checkpointer.resume_or_load(trainer.cfg.MODEL.WEIGHTS, resume=False)
        return
    if comm.is_main_process():
        remove_stale_temporaries(checkpointer.save_dir)
    extra = checkpointer.load(_agreed_resume_checkpoint(trainer))
    trainer.start_epoch = extra.get("epoch", -1) + 1
    start_iter = trainer.start_epoch * trainer.iters_per_epoch
    loader = trainer.data_loader
    state = trainer.training_state.loaded
    stopped_at = extra.get("iteration")  # a checkpoint written mid-epoch by a stop signal (preempt)
    if (state is not None and isinstance(stopped_at, int) and state["iteration"] == stopped_at
            and start_iter < stopped_at <= start_iter + trainer.iters_per_epoch):
        start_iter = stopped_at
        trainer.resume_iteration = stopped_at
    if state is None:
        logger.warning("%s has no training_state (written by fastreid or an older fastreid_ewth): resuming at "
                       "epoch %d with the batches that follow, but with fresh random states, so not exactly "
                       "as the interrupted run would have gone on.", checkpointer.get_checkpoint_file(),
                       trainer.start_epoch)
    else:
        if state["iteration"] != start_iter:
            logger.warning("The checkpoint was written at iteration %d, but epoch %d starts at iteration %d: "
                           "resuming at the epoch boundary.", state["iteration"], trainer.start_epoch, start_iter)
        if state["batch"] != loader.batch_size:
            logger.warning("The checkpoint was written with %d images per process and step, this run has %d "
                           "(SOLVER.IMS_PER_BATCH / processes): the data stream is not the interrupted run's.",
                           state["batch"], loader.batch_size)
        loader.seeds = state["data"]
        trainer.training_state.best_metric = max(trainer.training_state.best_metric, float(extra.get("metric", -1)))
    loader.resume_at(start_iter)
    logger.info("Resuming at epoch %d (iteration %d): the data stream skips the %d batches already trained on.",
                trainer.start_epoch, start_iter, start_iter)


def _agreed_resume_checkpoint(trainer):
    """The checkpoint every process resumes from.

    The main process chooses it (and reports a damaged one, once) and tells the others: each process
    choosing on its own could see the folder at different moments, and would repeat every warning.
    """
    choice, error = None, None
    if comm.is_main_process():
        try:
            choice = trainer.checkpointer.find_resume_checkpoint(trainer.iters_per_epoch, trainer.max_epoch)
        except Exception as e:  # the other processes must hear of it too, or they wait for the choice forever
            choice, error = (None, str(e)), e
    if comm.get_world_size() > 1:
        choice = comm.all_gather(choice)[0]
    if error is not None:
        raise error
    path, message = choice
    if path is None:
        raise NoResumeCheckpointError(message)
    if message and comm.is_main_process():
        logger.warning(message)
    return path
