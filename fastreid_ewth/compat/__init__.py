"""The only door into fastreid's internals.

fastreid 1.4.0 is the one release of fastreid; this package depends on how that release behaves inside,
in two ways, each kept here and nowhere else:

- :mod:`.patches`: fixes for breakages of fastreid 1.4.0 on today's Python / torch / numpy, applied in
  memory by :func:`apply` (``import fastreid_ewth`` calls it first); :func:`describe` lists them.
- :mod:`.internals`: named functions for the few places where this package needs something fastreid offers
  no public seam for (its per-machine process group, a sampler's seed, the datasets root, ...). Each states
  the fastreid 1.4.0 behaviour it relies on and has a test in ``tests/test_compat.py`` that fails when that
  behaviour changes.

Everywhere else the package uses only fastreid's public API and these functions.
"""
from . import internals, patches
from .internals import (
    build_optimizer_without,
    call_after_write_metrics,
    call_before_write_metrics,
    checkpointer_property,
    datasets_root,
    jaccard_search_option,
    load_checkpoint_file,
    registered_datasets,
    registry_names,
    sampler_seed,
    set_local_process_group,
    set_sampler_seed,
    set_warmup_iters,
    close_loader_iterator,
    last_eval_results,
    trainer_hooks,
)
from .patches import apply, describe

__all__ = [
    "apply", "describe", "internals", "patches",
    "build_optimizer_without", "checkpointer_property", "datasets_root", "jaccard_search_option",
    "load_checkpoint_file", "registered_datasets", "registry_names", "sampler_seed", "set_local_process_group",
    "set_sampler_seed", "set_warmup_iters", "call_before_write_metrics", "call_after_write_metrics",
    "close_loader_iterator", "last_eval_results", "trainer_hooks",
]
