"""Datasets registered into fastreid's ``DATASET_REGISTRY``."""
from .synth_reid import SynthReID, ensure_synth_reid, generate_synth_reid

__all__ = ["SynthReID", "ensure_synth_reid", "generate_synth_reid"]
