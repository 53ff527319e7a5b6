"""The patches that make fastreid 1.4.0 work on today's Python, torch and numpy.

fastreid's only release was written for torch 1.13 / Python 3.8. Every patch below names the breakage
it fixes and has a test in ``tests/test_compat.py``. Nothing on disk is edited: the fixes are applied
in memory by ``apply()``, which ``import fastreid_ewth`` calls before any fastreid module is imported.

Patches are applied in two phases: the first three must be in place *before* fastreid's modules are
imported (they fix import-time errors); the rest replace functions inside imported modules.
"""
import collections
import collections.abc
import functools
import logging
import os
import shutil
import sys
import types
import warnings

from ..files import atomic_write

logger = logging.getLogger(__name__)

#: name -> one-line description of the breakage, filled by ``apply()``; shown by ``describe()``.
APPLIED = {}


def _record(name, breakage):
    APPLIED[name] = breakage


# --------------------------------------------------------------------------------------------------
# Phase 1: import-time breakages
# --------------------------------------------------------------------------------------------------
def _patch_torch_six():
    """``ModuleNotFoundError: No module named 'torch._six'`` (fastreid/data/build.py, torch >= 2.0).

    ``torch._six`` was removed in torch 2.0; fastreid only needs ``string_classes`` from it.
    """
    if "torch._six" in sys.modules:
        return
    try:
        import torch._six  # noqa: F401  (old torch: nothing to do)
        return
    except ImportError:
        pass
    six = types.ModuleType("torch._six")
    six.string_classes = (str, bytes)
    six.int_classes = int
    six.inf = float("inf")
    six.nan = float("nan")
    sys.modules["torch._six"] = six
    import torch

    torch._six = six
    _record("torch_six", "ModuleNotFoundError: No module named 'torch._six' (torch >= 2.0)")


def _patch_collections_abc():
    """``ImportError: cannot import name 'Mapping' from 'collections'`` (Python >= 3.10).

    fastreid/data/build.py and fastreid/evaluation/testing.py import the ABCs from ``collections``.
    """
    patched = False
    for name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
            patched = True
    if patched:
        _record("collections_abc", "ImportError: cannot import name 'Mapping' from 'collections' (Python >= 3.10)")


def _patch_numpy_aliases():
    """``AttributeError: module 'numpy' has no attribute 'bool'`` (numpy 1.24 - 1.26).

    fastreid's Python rank evaluation uses ``np.bool``; numpy 1.24 removed it and numpy 2 brought it
    back as an alias of ``np.bool_``, so only the 1.24 - 1.26 range needs the alias.
    """
    import numpy as np

    try:
        np.bool  # noqa: B018
    except AttributeError:
        np.bool = bool
        _record("numpy_bool", "AttributeError: module 'numpy' has no attribute 'bool' (numpy 1.24 - 1.26)")


# --------------------------------------------------------------------------------------------------
# Phase 2: run-time breakages inside fastreid modules
# --------------------------------------------------------------------------------------------------
def _patch_cpu_data_loader():
    """``RuntimeError`` from ``torch.cuda.Stream`` in ``DataLoaderX.__init__`` on a machine without CUDA.

    fastreid's loaders always build ``DataLoaderX``, which creates a CUDA stream and copies every batch to
    the GPU from a background thread. Without CUDA we hand out a plain ``torch.utils.data.DataLoader``;
    the model moves batches to its device itself. With CUDA, fastreid's prefetching loader is kept.
    """
    import torch
    from torch.utils.data import DataLoader

    from fastreid.data import build as data_build

    original = getattr(data_build, "_ewth_original_DataLoaderX", data_build.DataLoaderX)

    def make_loader(local_rank, **kwargs):
        if torch.cuda.is_available():
            return original(local_rank, **kwargs)
        kwargs["pin_memory"] = False
        return DataLoader(**kwargs)

    data_build._ewth_original_DataLoaderX = original
    data_build.DataLoaderX = make_loader
    _record("cpu_data_loader", "RuntimeError from torch.cuda.Stream() in DataLoaderX on a machine without CUDA")


def _patch_optimizer_zero_grad():
    """Training silently does nothing on torch >= 2.0 (``zero_grad`` defaults to ``set_to_none=True``).

    fastreid's ``build_optimizer`` wraps the parameters in ``ContiguousParams``: every parameter is a view
    of one flat buffer per group and the optimizer only sees those buffers, whose ``.grad`` is a flat
    gradient buffer the parameters' gradients are views of. ``zero_grad(set_to_none=True)`` drops that
    ``.grad``; backward still writes the views (now never zeroed), the optimizer sees ``grad is None``
    and skips every group: losses are logged, no weight changes. We make ``zero_grad`` of optimizers
    built over contiguous buffers zero the buffer in place instead of dropping it.
    """
    from fastreid import solver
    from fastreid.solver import build as solver_build
    from fastreid.utils.params import ContiguousParams

    original = getattr(solver_build, "_ewth_original_build_optimizer", solver_build.build_optimizer)

    @functools.wraps(original)
    def build_optimizer(cfg, model, contiguous=True):
        optimizer, param_wrapper = original(cfg, model, contiguous=contiguous)
        if isinstance(param_wrapper, ContiguousParams):
            optimizer.zero_grad = functools.partial(optimizer.zero_grad, set_to_none=False)
        return optimizer, param_wrapper

    solver_build._ewth_original_build_optimizer = original
    solver_build.build_optimizer = build_optimizer
    solver.build_optimizer = build_optimizer
    # DefaultTrainer.build_optimizer calls the name bound in fastreid.engine.defaults
    defaults = sys.modules.get("fastreid.engine.defaults")
    if defaults is not None:
        defaults.build_optimizer = build_optimizer
    _record("optimizer_zero_grad", "weights never change on torch >= 2.0: zero_grad(set_to_none=True) "
                                   "drops the ContiguousParams gradient buffer")


def _patch_evaluator_compile():
    """The evaluator runs ``make`` inside site-packages at first use and calls ``sys.exit(1)`` on failure.

    ``ReidEvaluator.__init__`` compiles fastreid's Cython ranking code into the installed package (needs
    Cython, a compiler and a writable environment) and exits the whole process when that fails. We never
    compile: if a compiled module is already importable fastreid uses it, otherwise its Python path.
    """
    from fastreid.evaluation import reid_evaluation

    def _compile_dependencies(self):
        return None

    reid_evaluation.ReidEvaluator._compile_dependencies = _compile_dependencies
    _record("evaluator_compile", "ReidEvaluator compiles Cython into site-packages and sys.exit(1)s on failure")


def _patch_checkpoint_weights_only():
    """``UnpicklingError: Weights only load failed`` when loading fastreid checkpoints (torch >= 2.6).

    torch 2.6 made ``torch.load(weights_only=True)`` the default; fastreid's checkpoints hold the scheduler
    and iteration state as plain Python objects. The checkpointer loads files the user points it at
    (their own runs), so we load them as fastreid 1.4.0 did.
    """
    from fastreid.utils.checkpoint import Checkpointer

    from .internals import load_checkpoint_file

    def _load_file(self, f):
        return load_checkpoint_file(f)

    Checkpointer._load_file = _load_file
    _record("checkpoint_weights_only", "UnpicklingError: Weights only load failed (torch >= 2.6 default)")


def _patch_read_image_names_file():
    """A corrupt or truncated image fails deep in a loader worker with ``OSError: image file is truncated``
    (or ``cannot identify image file <_io.BufferedReader ...>``), which does not say which file.

    fastreid's dataset reads every image through ``read_image``; we re-raise its failures naming the file.
    """
    from fastreid.data import common

    original = getattr(common, "_ewth_original_read_image", common.read_image)

    def read_image(file_name, format=None):
        try:
            return original(file_name, format)
        except (OSError, ValueError, SyntaxError) as e:
            raise OSError("cannot read image {!r}: {}. The file is corrupt or truncated: restore it from the "
                          "dataset archive or remove it from the dataset folder.".format(file_name, e)) from e

    common._ewth_original_read_image = original
    common.read_image = read_image
    _record("read_image_names_file", "OSError: image file is truncated (no file name) from a loader worker")


def _patch_preprocess_in_place():
    """Flip test (``TEST.FLIP.ENABLED``) averages the feature of the image with that of a *twice*-normalised
    mirror image, and any caller's input batch comes back changed.

    ``Baseline.preprocess_image`` normalises ``batched_inputs["images"]`` in place, so when fastreid's
    ``inference_on_dataset`` then flips ``inputs["images"]`` for the second pass, it flips the normalised
    batch, which is normalised again. We normalise into a new tensor: the same values for the first pass,
    the mirror image's real feature for the second, and inputs left as they were.
    """
    from fastreid.modeling.meta_arch.baseline import Baseline

    import torch

    def preprocess_image(self, batched_inputs):
        if isinstance(batched_inputs, dict):
            images = batched_inputs["images"]
        elif isinstance(batched_inputs, torch.Tensor):
            images = batched_inputs
        else:
            raise TypeError("batched_inputs must be a dict with 'images' or a tensor, got {}".format(
                type(batched_inputs).__name__))
        return (images - self.pixel_mean) / self.pixel_std

    Baseline.preprocess_image = preprocess_image
    _record("preprocess_in_place", "flip test normalises the mirrored batch twice (inputs changed in place)")


def _patch_ddp_on_cpu():
    """``ValueError: DistributedDataParallel device_ids and output_device arguments only work with
    single-device/multiple-device GPU modules or CPU modules, but got device_ids [0], output_device None, and
    module parameters {device(type='cpu')}`` (multi-process training on CPU with gloo, torch 1.13 and 2.x).

    ``DefaultTrainer`` wraps the model as ``DistributedDataParallel(model, device_ids=[local_rank])``, which
    only a GPU module accepts. The name it calls becomes a subclass of torch's class that leaves
    ``device_ids``/``output_device`` out when the module's parameters are on the CPU (what torch asks for
    CPU modules); GPU modules are wrapped exactly as before, and the result is still a
    ``DistributedDataParallel``.
    """
    from fastreid.engine import defaults

    original = getattr(defaults, "_ewth_original_DistributedDataParallel", defaults.DistributedDataParallel)

    class DistributedDataParallel(original):
        def __init__(self, module, device_ids=None, output_device=None, *args, **kwargs):
            if device_ids is not None and all(p.device.type == "cpu" for p in module.parameters()):
                device_ids = output_device = None
            super().__init__(module, device_ids, output_device, *args, **kwargs)

    defaults._ewth_original_DistributedDataParallel = original
    defaults.DistributedDataParallel = DistributedDataParallel
    _record("ddp_on_cpu", "ValueError: DistributedDataParallel device_ids ... only work with GPU modules "
                          "(DefaultTrainer on CPU with several processes)")


PRETRAIN_TIMEOUT_S = 20


def _patch_pretrained_download():
    """ResNet ImageNet weights: ``ModuleNotFoundError: No module named 'gdown'``, or a hang offline.

    fastreid downloads ImageNet weights with ``gdown`` (not a dependency) and, with it, retries
    indefinitely on a machine without internet. We download once, with a timeout, into torch's hub cache
    (through ``files.atomic_write``), and otherwise fail at once saying how to pass
    ``MODEL.BACKBONE.PRETRAIN_PATH``.
    """
    from fastreid.modeling.backbones import resnet

    resnet.init_pretrained_weights = functools.partial(_load_imagenet_weights, resnet.model_urls)
    _record("pretrained_download", "ModuleNotFoundError: No module named 'gdown' / endless retries offline")


def _load_imagenet_weights(model_urls, key):
    import urllib.request

    import torch

    url = model_urls[key]
    cache_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    cached = os.path.join(cache_dir, os.path.basename(url))
    if not os.path.isfile(cached):
        logger.info("ImageNet weights not in %s; downloading %s", cached, url)
        os.makedirs(cache_dir, exist_ok=True)
        try:
            with urllib.request.urlopen(url, timeout=PRETRAIN_TIMEOUT_S) as response:
                atomic_write(cached, lambda out: shutil.copyfileobj(response, out, 1 << 20))
        except Exception as e:  # any network failure ends the same way: tell the user what to do
            raise RuntimeError(
                "ImageNet weights for backbone depth {key!r} are not on disk ({cached}) and could not be "
                "downloaded from {url} ({err}). Download that file on a machine with internet and pass it with "
                "`MODEL.BACKBONE.PRETRAIN_PATH /path/to/{name}`, copy it to {cached}, or train from scratch "
                "with `MODEL.BACKBONE.PRETRAIN False`.".format(
                    key=key, cached=cached, url=url, err=e, name=os.path.basename(url))
            ) from None
    return torch.load(cached, map_location=torch.device("cpu"))


_applied = False


def apply():
    """Apply every patch once. Safe to call again."""
    global _applied
    if _applied:
        return
    _patch_torch_six()
    _patch_collections_abc()
    _patch_numpy_aliases()
    import fastreid.engine  # noqa: F401  (imports data, evaluation, solver, modeling)

    _patch_cpu_data_loader()
    _patch_optimizer_zero_grad()
    _patch_evaluator_compile()
    _patch_checkpoint_weights_only()
    _patch_pretrained_download()
    _patch_read_image_names_file()
    _patch_preprocess_in_place()
    _patch_ddp_on_cpu()
    # fastreid's ToTensor builds every image through torch.ByteStorage, which torch >= 2 reports as
    # deprecated from each loader worker; the call still works, the message only buries the logs.
    warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
    _applied = True


def describe():
    """Return ``{patch name: breakage it fixes}`` for the patches in effect."""
    return dict(APPLIED)
