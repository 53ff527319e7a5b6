"""Datasets and their image sets from a config: the one place that turns ``DATASETS.*`` into images.

fastreid's loaders build every dataset as ``cls(root=$FASTREID_DATASETS)``; the datasets of
:mod:`.own` are named in full by their config keys instead, so the trainer's loaders, the run checks and
``tools/embed.py`` build datasets here and hand fastreid's loaders the finished image sets.
"""
import logging

from fastreid.data.common import CommDataset
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.transforms import build_transforms
from fastreid.utils import comm

from .. import compat

logger = logging.getLogger(__name__)

__all__ = ["build_dataset", "named_by_config", "require_split", "build_train_set", "build_test_set"]


def build_dataset(cfg, name, **kwargs):
    """The fastreid dataset ``name`` of ``cfg``: ``from_config(cfg, root=..., **kwargs)`` where the class has one
    (``ReidFolder``, ``ReidList``), else ``cls(root=$FASTREID_DATASETS, **kwargs)`` as fastreid builds it."""
    try:
        cls = DATASET_REGISTRY.get(name)
    except KeyError:
        raise ValueError("dataset {!r} is not registered; registered datasets: {}. Your own data needs no code: "
                         "ReidFolder (DATASETS.FOLDER.ROOT) or ReidList (DATASETS.LIST.*)".format(
                             name, ", ".join(compat.registered_datasets()))) from None
    if hasattr(cls, "from_config"):
        return cls.from_config(cfg, root=compat.datasets_root(), **kwargs)
    return cls(root=compat.datasets_root(), **kwargs)


def named_by_config(name):
    """Whether dataset ``name`` is found through its config keys (``from_config``), not under $FASTREID_DATASETS."""
    try:
        return hasattr(DATASET_REGISTRY.get(name), "from_config")
    except KeyError:
        return False


def require_split(data, name, split, used_by):
    """``data.<split>`` (``train``, ``query`` or ``gallery``), or ``ValueError`` saying why it is empty."""
    items = getattr(data, split)
    if items:
        return items
    why = getattr(data, "missing", {}).get(split)
    where = why if why else "looked under {}".format(compat.datasets_root())
    raise ValueError("{}: the {} set of {} is empty ({}); {}".format(
        used_by, split, name, where, "training needs images" if split == "train"
        else "evaluation needs query and gallery images"))


def build_train_set(cfg):
    """The training images of every dataset in ``DATASETS.NAMES``, with the training transforms, relabelled."""
    items = []
    for name in cfg.DATASETS.NAMES:
        data = build_dataset(cfg, name, combineall=cfg.DATASETS.COMBINEALL)
        if comm.is_main_process():
            data.show_train()
        items.extend(require_split(data, name, "train", "DATASETS.NAMES"))
    return CommDataset(items, build_transforms(cfg, is_train=True), relabel=True)


def build_test_set(cfg, name):
    """``(image set, num_query)`` of test dataset ``name``: its query images first, then its gallery, with the
    test transforms (what ``--eval-only`` evaluates)."""
    data = build_dataset(cfg, name)
    if comm.is_main_process():
        data.show_test()
    query = require_split(data, name, "query", "DATASETS.TESTS")
    gallery = require_split(data, name, "gallery", "DATASETS.TESTS")
    return CommDataset(query + gallery, build_transforms(cfg, is_train=False), relabel=False), len(query)
