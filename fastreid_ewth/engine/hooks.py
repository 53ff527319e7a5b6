"""Training hooks of fastreid_ewth."""
import torch

from fastreid.engine.hooks import PeriodicCheckpointer
from fastreid.engine.train_loop import HookBase

__all__ = ["CenterLossOptimizer", "ResumableCheckpointer"]


class CenterLossOptimizer(HookBase):
    """Steps the center-loss centers with their own optimizer, as AGW does.

    Before each step the centers' gradient is cleared; after the model's backward it is divided by the
    loss weight (and by the AMP loss scale, when there is one) and the centers' SGD steps. A step whose
    center gradient is not finite (AMP overflow) is skipped, as the grad scaler skips the model's.
    """

    def __init__(self, optimizer, center_loss):
        self.optimizer = optimizer
        self.center_loss = center_loss
        self._amp_scale = 1.0

    def before_step(self):
        self.optimizer.zero_grad(set_to_none=False)
        scaler = self.trainer.grad_scaler
        self._amp_scale = scaler.get_scale() if scaler is not None else 1.0

    def after_step(self):
        divisor = self.center_loss.scale * self._amp_scale
        grads = [p.grad for p in self.center_loss.parameters() if p.grad is not None]
        if not grads:
            return
        for g in grads:
            g.div_(divisor)
        if all(torch.isfinite(g).all() for g in grads):
            self.optimizer.step()


class ResumableCheckpointer(PeriodicCheckpointer):
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
