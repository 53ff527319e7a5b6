"""Stop training at the first non-finite loss, before it reaches the weights, and keep the last good state.

fastreid checks the loss only on the main process, after the backward pass, and raises without saving:
the other processes go on into the next step's collectives (and wait there until they time out), the
weights of the last good step are lost unless a periodic checkpoint happens to hold them, and the
message does not say on which process the loss went bad. ``NonFiniteLossGuard`` is a forward hook on the
training model: right after the forward pass it flags, on the loss terms' device, every term that is not
finite, and starts one asynchronous all-reduce of the count (several processes); nothing waits for the
device there. The count is read when fastreid writes the step's metrics, after the backward pass and before
the optimizer step, where fastreid synchronises with the device anyway (``compat.call_before_write_metrics``).
On a non-finite term every process stops together, after the main process saved ``model_last_good.pth``
(model, optimizers, schedulers as they were before this step).

A trainer without fastreid's inner ``SimpleTrainer`` (a stand-in) gets the check in the hook itself.
"""
import logging
import os
import weakref

import torch
import torch.distributed as dist

from fastreid.utils import comm

from .. import compat
from ..files import LAST_GOOD

logger = logging.getLogger(__name__)

__all__ = ["NonFiniteLossError", "NonFiniteLossGuard"]


class NonFiniteLossError(FloatingPointError):
    """A loss term was NaN or infinite; raised on every process of the run."""


class _Flag:
    """The count of non-finite terms of one forward pass, on its way to the host.

    Created in the forward hook without waiting for the device. On CUDA the count (after the all-reduce, when
    there is one) is copied to pinned host memory on a side stream that waits for the forward pass and the
    all-reduce only, so reading it waits neither for the backward pass nor for the other processes' backward.
    ``losses`` (detached: no autograd graph is kept alive) and ``finite`` are what a report needs.
    """

    def __init__(self, losses, finite, bad, work):
        self.losses, self.finite = losses, finite
        self._bad, self._work, self._done = bad, work, None
        if bad.is_cuda:
            side = torch.cuda.Stream(device=bad.device)
            side.wait_stream(torch.cuda.current_stream(bad.device))
            with torch.cuda.stream(side):
                if work is not None:
                    work.wait()  # makes the side stream wait for the all-reduce; the host goes on
                host = torch.empty((), dtype=bad.dtype, pin_memory=True)
                host.copy_(bad, non_blocking=True)
                self._done = torch.cuda.Event()
                self._done.record(side)
            bad.record_stream(side)
            self._bad, self._work, self._device = host, None, (bad, work)  # kept until read

    def count(self):
        """Number of non-finite terms (summed over the processes); waits for it if it is not there yet."""
        if self._work is not None:
            self._work.wait()
        if self._done is not None:
            self._done.synchronize()
        return self._bad.item()


class NonFiniteLossGuard:
    """Forward hook for the training model (``model.register_forward_hook(NonFiniteLossGuard(trainer))``).

    Acts only in training mode, where fastreid's models return ``{loss name: scalar tensor}``. The flags are
    computed in the hook and read (``settle``) when fastreid writes the step's metrics: after the backward
    pass, before its own non-finite check and before the optimizer step, so the model and optimizer are still
    those of the last good step when they are saved. A forward pass without a metrics write after it (one
    outside a training step) is settled at the next forward pass at the latest.
    """

    def __init__(self, trainer):
        self._trainer = weakref.proxy(trainer)
        self._pending = None
        # False for a trainer that is not fastreid's (a stand-in): then the hook checks at once
        self._deferred = compat.call_before_write_metrics(trainer, self.settle)

    def __call__(self, module, inputs, output):
        if not module.training or not isinstance(output, dict) or not output:
            return None
        values = list(output.values())
        if not all(isinstance(v, torch.Tensor) for v in values):
            return None
        self.settle()
        losses = {name: v.detach() for name, v in output.items()}
        finite = torch.stack([torch.isfinite(v).all() for v in losses.values()])
        bad = (~finite).sum().to(torch.float32)
        work = None
        if comm.get_world_size() > 1:
            # one process alone must not stop: the others would wait for it in the next collective forever
            work = dist.all_reduce(bad, async_op=True)
        self._pending = _Flag(losses, finite, bad, work)
        if not self._deferred:
            self.settle()
        return None

    def settle(self):
        """Read the flags of the last forward pass (if not read yet); stop every process if one was set."""
        flag, self._pending = self._pending, None
        if flag is not None and flag.count() != 0:
            self._stop(flag.losses, flag.finite)

    def _stop(self, losses, finite):
        trainer = self._trainer
        mine = {name: float(v.float().sum()) for (name, v), ok in zip(losses.items(), finite.tolist()) if not ok}
        reports = comm.all_gather((comm.get_rank(), mine))
        iteration, epoch = int(trainer.iter), int(trainer.epoch)
        path = trainer.checkpointer.save_snapshot(LAST_GOOD, iteration=iteration, nonfinite=dict(reports))
        # the file must be complete before any process exits: a launcher kills the others when one ends
        comm.synchronize()
        if path is None:
            path = os.path.join(trainer.cfg.OUTPUT_DIR, LAST_GOOD + ".pth")
        terms = []
        for name in losses:
            ranks = [(rank, bad_terms[name]) for rank, bad_terms in reports if name in bad_terms]
            if ranks:
                where = "" if comm.get_world_size() == 1 else " on rank {}".format(
                    ", ".join(str(r) for r, _ in ranks))
                terms.append("{} = {}{}".format(name, ranks[0][1], where))
        last = trainer.checkpointer.get_checkpoint_file() if trainer.checkpointer.has_checkpoint() else ""
        message = (
            "Non-finite loss at iteration {it} (epoch {ep}, step {st} of {n}): {terms}. Training stopped before "
            "this step changed any weight; the last good state (model, optimizers and schedulers after {done} "
            "good iterations) is saved in {path} (load it with MODEL.WEIGHTS to inspect it). {resume}Usual "
            "causes: a learning rate too high for the batch (lower SOLVER.BASE_LR or lengthen "
            "SOLVER.WARMUP_EPOCHS), a loss weight that is too large (MODEL.LOSSES.*.SCALE), or a corrupt input "
            "image in this batch."
        ).format(it=iteration, ep=epoch, st=iteration - epoch * trainer.iters_per_epoch + 1,
                 n=trainer.iters_per_epoch, terms="; ".join(terms), done=iteration, path=path,
                 resume=("`--resume` continues from {}, the last periodic checkpoint. ".format(last)
                         if last else ""))
        raise NonFiniteLossError(message)
