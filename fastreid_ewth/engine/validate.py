"""Check a run's config and inputs before anything is written to ``OUTPUT_DIR``.

Every check raises an error that names the bad value and says how to fix it. ``setup_cfg`` calls
``validate_run`` before fastreid's ``default_setup`` creates the output folder, its log and its config
copy, so a rejected run leaves nothing behind.
"""
import os

import torch

from fastreid.data.datasets import DATASET_REGISTRY

from ..modeling import SUPPORTED_LOSSES, EWTHLoss
from ..modeling.center_loss import check_center_config
from .sampler_check import check_identity_sampler

__all__ = ["validate_run", "FASTREID_LOSSES", "DATASET_LAYOUTS"]

# what fastreid's own Baseline computes; it silently ignores any other name
FASTREID_LOSSES = ("CrossEntropyLoss", "TripletLoss", "CircleLoss", "Cosface")

# where fastreid's readers look under $FASTREID_DATASETS
DATASET_LAYOUTS = {
    "Market1501": "Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}/*.jpg",
    "DukeMTMC": "DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}/*.jpg",
    "MSMT17": "MSMT17_V2/{mask_train_v2,mask_test_v2,list_train.txt,list_val.txt,list_query.txt,list_gallery.txt}",
    "CUHK03": "cuhk03/cuhk03_release/cuhk-03.mat (+ the splits fastreid derives from it)",
}


def validate_run(cfg, world_size=1, eval_only=False):
    """Raise ``ValueError`` / ``FileNotFoundError`` for the first bad input of the run ``cfg`` describes."""
    _check_device(cfg.MODEL.DEVICE)
    _check_losses(cfg)
    _check_weights_path(cfg.MODEL.WEIGHTS)
    if not eval_only:
        check_identity_sampler(cfg, world_size)
        for name in cfg.DATASETS.NAMES:
            data = _load_dataset(name)
            if not data.train:
                raise ValueError("DATASETS.NAMES: {} has no training images under {}".format(name, _root()))
    for name in cfg.DATASETS.TESTS:
        data = _load_dataset(name)
        for split in ("query", "gallery"):
            if not getattr(data, split):
                raise ValueError("DATASETS.TESTS: the {} set of {} is empty (looked under {}); evaluation needs "
                                 "query and gallery images".format(split, name, _root()))


def _check_device(device):
    try:
        torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError("MODEL.DEVICE {!r} is not a device: use 'cuda', 'cuda:1' or 'cpu' (without CUDA, 'cuda' "
                         "falls back to 'cpu' with a warning)".format(device)) from None


def _check_losses(cfg):
    arch = cfg.MODEL.META_ARCHITECTURE
    names = tuple(cfg.MODEL.LOSSES.NAME)
    known = {"EWTHBaseline": SUPPORTED_LOSSES, "Baseline": FASTREID_LOSSES}.get(arch)
    if known is not None:
        unknown = [n for n in names if n not in known]
        if unknown:
            hint = " (EWTHLoss and CenterLoss need MODEL.META_ARCHITECTURE EWTHBaseline)" if arch == "Baseline" \
                else ""
            raise ValueError("MODEL.LOSSES.NAME {}: unknown loss name(s) {} for {}; valid names are {}{}".format(
                names, unknown, arch, ", ".join(known), hint))
    if "EWTHLoss" in names:
        EWTHLoss.from_config(cfg)  # checks MODEL.LOSSES.EWTH; building it is cheap (no parameters)
    if "CenterLoss" in names:
        check_center_config(cfg)


def _check_weights_path(weights):
    if weights and not os.path.isfile(weights):
        raise FileNotFoundError("MODEL.WEIGHTS {!r} does not exist. Pass the checkpoint of a finished run, e.g. "
                                "`MODEL.WEIGHTS <OUTPUT_DIR>/model_final.pth`, or leave it empty.".format(weights))


def _root():
    from fastreid.data import build

    return build._root


def _load_dataset(name):
    try:
        dataset_cls = DATASET_REGISTRY.get(name)
    except KeyError:
        raise ValueError("dataset {!r} is not registered; registered datasets: {}".format(
            name, ", ".join(sorted(DATASET_REGISTRY._obj_map)))) from None
    try:
        return dataset_cls(root=_root())
    except (RuntimeError, FileNotFoundError) as e:
        layout = DATASET_LAYOUTS.get(name, "the folder layout its fastreid reader expects")
        raise FileNotFoundError(
            "dataset {} not found: {}. Datasets are read from $FASTREID_DATASETS (now {!r}; default 'datasets'), "
            "laid out as $FASTREID_DATASETS/{}. Set FASTREID_DATASETS to the folder that holds it.".format(
                name, e, _root(), layout)) from None
