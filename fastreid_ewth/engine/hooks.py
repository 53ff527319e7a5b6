"""Training hooks of fastreid_ewth."""
import torch

from fastreid.engine.train_loop import HookBase

__all__ = ["CenterLossOptimizer"]


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
