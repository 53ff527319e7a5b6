"""A training loader that restarts at any batch, with augmentations that do not depend on who loads them.

fastreid's training samplers are infinite index streams seeded once (``np.random.seed(seed)`` when the
stream starts) that then draw from numpy's *global* generator, which the augmentations, the evaluation
and everything else in the process also draw from. Two consequences for a resumed run: the stream
cannot be saved (it lives in a generator's local variables), and even replaying it from its seed does
not give the original batches, because the original run interleaved other draws with it. The
augmentations have the same problem one level down: they draw from the global generators of whichever
process loads the image (the trainer with ``NUM_WORKERS 0``, a loader worker otherwise, each worker
seeded once when it starts).

``make_resumable`` wraps fastreid's loader so that

- the sampler draws from private copies of numpy's, torch's and Python's generators (swapped in around
  each draw), so its stream depends only on its seed: a restarted run fast-forwards it by the number of
  samples already trained on (indices only: no image is read) and continues with the same batches;
- every sample is augmented with generators seeded from ``(seed, rank, position in the stream)``, so the
  augmentation of the n-th sample is the same whatever ``DATALOADER.NUM_WORKERS`` is, and after a resume;
- the loader's iterator (and its worker processes) starts at the first batch actually requested, with
  the trainer's generators left as they were, so creating it consumes no random number of the run.
"""
import collections
import contextlib
import itertools
import logging
import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from fastreid.data.build import build_reid_train_loader
from fastreid.utils import comm

logger = logging.getLogger(__name__)

__all__ = ["make_resumable", "ResumableLoader", "ResumableSampler", "SeededSamples"]


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


class ResumableSampler(Sampler):
    """fastreid's training sampler as a stream of ``(index, position)`` that can start at any position.

    ``position`` counts this process's samples from the start of training (0, 1, 2, ...). Set ``start`` (the
    number of samples this process already trained on) before iterating to continue a run.

    Args:
        sampler: a fastreid training sampler (an infinite per-process index stream with a ``_seed``).
        seed (int): seed of the private generators, used when ``sampler`` has no ``_seed`` of its own.
    """

    def __init__(self, sampler, seed):
        self.sampler = sampler
        self.fallback_seed = int(seed)
        self.start = 0

    @property
    def seed(self):
        """The seed the stream is drawn from (fastreid's sampler's own, shared by all processes)."""
        return int(getattr(self.sampler, "_seed", self.fallback_seed))

    @seed.setter
    def seed(self, value):
        # a resumed run must replay the stream of the run it continues, also when that one drew a random seed
        if hasattr(self.sampler, "_seed"):
            self.sampler._seed = int(value)
        else:
            self.fallback_seed = int(value)

    def __iter__(self):
        generators = _PrivateGenerators(self.seed)
        start = self.start
        with generators.active():
            indices = iter(self.sampler)
            # skip what was trained on: indices only, no image is loaded
            collections.deque(itertools.islice(indices, start), maxlen=0)
        for position in itertools.count(start):
            with generators.active():
                index = next(indices, None)
            if index is None:
                return
            yield index, position


class SeededSamples(Dataset):
    """A dataset indexed by ``(index, position)`` that augments each sample with its own seeded generators.

    ``dataset[index]`` is computed with Python's, numpy's and torch's (CPU) global generators seeded from
    ``(seed, rank, position)``, and the caller's generators are restored afterwards. Other attributes
    (``num_classes``, ``img_items``, ...) are the wrapped dataset's.
    """

    def __init__(self, dataset, seed, rank):
        self.dataset = dataset
        self.seed = int(seed)
        self.rank = int(rank)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, position = key
        words = np.random.SeedSequence([self.seed, self.rank, int(position)]).generate_state(4)
        with _isolated_global_rng():
            random.seed(int(words[0]) << 32 | int(words[1]))
            np.random.seed(int(words[2]))
            # the CPU generator only: torch.manual_seed would also reseed (and so change) the CUDA ones
            torch.default_generator.manual_seed(int(words[3]))
            return self.dataset[index]

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
        return _LazyIterator(self.loader)

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
    fallback = getattr(batch_sampler.sampler, "_seed", None)
    if fallback is None:
        fallback = comm.shared_random_seed()  # every process draws the same one
    sampler = ResumableSampler(batch_sampler.sampler, fallback)
    dataset = SeededSamples(loader.dataset, seed=sampler.seed, rank=comm.get_rank())
    rebuilt = build_reid_train_loader(dataset, sampler=sampler, total_batch_size=mini_batch * comm.get_world_size(),
                                      num_workers=loader.num_workers)
    return ResumableLoader(rebuilt, sampler, mini_batch)
