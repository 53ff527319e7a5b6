"""Stop training at the first non-finite loss, before it reaches the weights, and keep the last good state.

fastreid checks the loss only on the main process, after the backward pass, and raises without saving:
the other processes go on into the next step's collectives (and wait there until they time out), the
weights of the last good step are lost unless a periodic checkpoint happens to hold them, and the
message does not say on which process the loss went bad. ``NonFiniteLossGuard`` is a forward hook on the
training model: it looks at every loss term right after the forward pass, agrees with the other processes
(one all-reduce of a counter per step), and on a non-finite term every process stops together, after the
main process saved ``model_last_good.pth`` (model, optimizers, schedulers as they were before this step).
"""
import logging
import os
import weakref

import torch
import torch.distributed as dist

from fastreid.utils import comm

from ..files import LAST_GOOD

logger = logging.getLogger(__name__)

__all__ = ["NonFiniteLossError", "NonFiniteLossGuard"]


class NonFiniteLossError(FloatingPointError):
    """A loss term was NaN or infinite; raised on every process of the run."""


class NonFiniteLossGuard:
    """Forward hook for the training model (``model.register_forward_hook(NonFiniteLossGuard(trainer))``).

    Acts only in training mode, where fastreid's models return ``{loss name: scalar tensor}``. The check
    happens before the backward pass and the optimizer step, so the model and optimizer are still those
    of the last good step when they are saved.
    """

    def __init__(self, trainer):
        self._trainer = weakref.proxy(trainer)

    def __call__(self, module, inputs, output):
        if not module.training or not isinstance(output, dict) or not output:
            return None
        values = list(output.values())
        if not all(isinstance(v, torch.Tensor) for v in values):
            return None
        finite = torch.stack([torch.isfinite(v.detach()).all() for v in values])
        bad = (~finite).sum().to(torch.float32)
        if comm.get_world_size() > 1:
            # one process alone must not stop: the others would wait for it in the next collective forever
            dist.all_reduce(bad)
        if bad.item() == 0:
            return None
        self._stop(output, finite)

    def _stop(self, output, finite):
        trainer = self._trainer
        mine = {name: float(v.detach().float().sum()) for (name, v), ok in zip(output.items(), finite.tolist())
                if not ok}
        reports = comm.all_gather((comm.get_rank(), mine))
        iteration, epoch = int(trainer.iter), int(trainer.epoch)
        path = trainer.checkpointer.save_snapshot(LAST_GOOD, iteration=iteration, nonfinite=dict(reports))
        # the file must be complete before any process exits: a launcher kills the others when one ends
        comm.synchronize()
        if path is None:
            path = os.path.join(trainer.cfg.OUTPUT_DIR, LAST_GOOD + ".pth")
        terms = []
        for name in output:
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
