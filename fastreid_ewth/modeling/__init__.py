"""Model pieces registered into fastreid: ``EWTHEmbeddingHead`` and ``EWTHBaseline``."""
from .center_loss import CenterLoss
from .embedding_head import EWTHEmbeddingHead
from .ewth_baseline import EWTHBaseline, SUPPORTED_LOSSES
from .ewth_loss import EWTHLoss

__all__ = ["CenterLoss", "EWTHEmbeddingHead", "EWTHBaseline", "EWTHLoss", "SUPPORTED_LOSSES"]
