"""fastreid_ewth: Element-Weighted TriHard losses and BoT/AGW recipes for fastreid.

``import fastreid_ewth`` first makes fastreid 1.4.0 work on today's Python / torch / numpy
(see :mod:`fastreid_ewth.compat`), then registers this package's dataset, heads and meta-architectures
into fastreid's registries, and exposes ``LOSS_REGISTRY``, the losses ``EWTHBaseline`` trains by name.
"""
from . import compat

compat.apply()

from .config import add_ewth_config  # noqa: E402
from . import data  # noqa: E402,F401  (registers SynthReID)
from . import modeling  # noqa: E402,F401  (registers EWTHEmbeddingHead, EWTHBaseline and the losses)
from .modeling.registry import LOSS_REGISTRY, ReidLoss  # noqa: E402

__version__ = "0.1.0"

__all__ = ["add_ewth_config", "compat", "LOSS_REGISTRY", "ReidLoss", "__version__"]
