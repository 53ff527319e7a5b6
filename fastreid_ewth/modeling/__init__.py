"""Model pieces registered into fastreid (``EWTHEmbeddingHead``, ``EWTHBaseline``) and the loss registry
``LOSS_REGISTRY`` with its entries: fastreid's losses, pytorch-metric-learning's, EWTH and the centre loss."""
from .registry import LOSS_REGISTRY, ReidLoss, registered_losses
from . import fastreid_losses, pml_losses  # noqa: F401  (register their entries)
from .center_loss import CenterLoss
from .embedding_head import EWTHEmbeddingHead
from .ewth_baseline import EWTHBaseline
from .ewth_loss import EWTHLoss

__all__ = ["CenterLoss", "EWTHEmbeddingHead", "EWTHBaseline", "EWTHLoss", "LOSS_REGISTRY", "ReidLoss",
           "registered_losses"]
