"""What a checkpoint must hold besides fastreid's model/optimizer/scheduler to continue a run exactly.

fastreid saves the model, the optimizer, the schedulers and the epoch. A run restarted from that repeats
the random numbers of a fresh start and replays its sampler from the first batch, so it trains on other
batches with other augmentations than the run it continues. ``TrainingState`` is registered with the
checkpointer as one more checkpointable and adds the random state of every process (Python, numpy,
torch CPU and CUDA), the iteration, the seeds of the data stream and the best metric so far.
"""
import logging
import random
import weakref

import numpy as np
import torch

from fastreid.utils import comm

logger = logging.getLogger(__name__)

__all__ = ["TrainingState", "capture_rng_state", "restore_rng_state"]

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
