"""Datasets registered into fastreid's ``DATASET_REGISTRY``: SynthReID, and your own data (``ReidFolder``,
``ReidList``) from YAML alone; ``build_dataset`` builds any of them from a config."""
from .build import build_dataset, build_test_set, build_train_set, named_by_config, require_split
from .own import ReidFolder, ReidList
from .synth_reid import SynthReID, ensure_synth_reid, generate_synth_reid

__all__ = ["ReidFolder", "ReidList", "SynthReID", "build_dataset", "build_test_set", "build_train_set",
           "ensure_synth_reid", "generate_synth_reid", "named_by_config", "require_split"]
