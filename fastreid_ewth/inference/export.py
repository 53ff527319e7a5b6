"""Export a trained model to ONNX, and prove the file computes the same features on real images.

The exported graph is the test feature as ``--eval-only`` computes it: input ``images`` (N, 3, H, W) float32,
RGB in 0..255 resized to ``INPUT.SIZE_TEST`` (what the test transforms give; the pixel mean/std
normalisation is inside the graph), output ``features`` (N, D); with ``TEST.FLIP.ENABLED`` the graph averages
the features of the image and its mirror image, as the evaluation does. The batch size is dynamic.

The file is written only once it has passed the check: onnxruntime runs it on real images (``--images``,
else the config's test set) at two batch sizes, next to PyTorch on the same tensors, and the largest
absolute feature difference must be within the tolerance (1e-4). A model that fails to export, or whose
export does not reproduce its features, is refused with the reason and nothing is left at the output path.
"""
import contextlib
import inspect
import logging
import os
import shutil
import tempfile
import warnings

import numpy as np
import torch
from torch import nn

from ..engine import EWTHTrainer, load_trained_model
from ..files import atomic_write
from .embed import folder_images

logger = logging.getLogger(__name__)

__all__ = ["TestFeature", "export_onnx", "check_images", "TOLERANCE", "ExportError"]

#: the largest absolute feature difference between onnxruntime and PyTorch that counts as the same model
TOLERANCE = 1e-4
#: the ONNX operator set written (supported by onnxruntime >= 1.15 and by every torch >= 2.0)
OPSET = 17


class ExportError(RuntimeError):
    """The model cannot be exported faithfully (the message says why)."""


class TestFeature(nn.Module):
    """``model``'s eval-mode feature of an image batch tensor; with ``flip`` averaged with the mirror image's."""

    def __init__(self, model, flip):
        super().__init__()
        self.model = model
        self.flip = bool(flip)

    def forward(self, images):
        features = self.model(images)
        if self.flip:
            features = (features + self.model(images.flip(dims=[3]))) / 2
        return features


def _runtime():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as e:
        raise ImportError("ONNX export needs onnx and onnxruntime ({}): pip install 'fastreid_ewth[onnx]' (or "
                          "pip install onnx onnxruntime)".format(e)) from None
    return onnxruntime


def check_images(cfg, images=None, count=32):
    """Up to ``count`` real image tensors for the check: from folder ``images``, else the test set of ``cfg``
    (its first ``DATASETS.TESTS`` entry, query images first), after the test transforms."""
    from fastreid.data.common import CommDataset
    from fastreid.data.transforms import build_transforms

    if images:
        items = folder_images(images)[:count]
        dataset = CommDataset(items, build_transforms(cfg, is_train=False), relabel=False)
        tensors = [dataset[i]["images"] for i in range(len(dataset))]
    else:
        if not cfg.DATASETS.TESTS:
            raise ValueError("no images to check the export with: pass --images FOLDER or set DATASETS.TESTS")
        loader, _ = EWTHTrainer.build_test_loader(cfg, cfg.DATASETS.TESTS[0])
        dataset = loader.dataset
        tensors = [dataset[i]["images"] for i in range(min(count, len(dataset)))]
    return torch.stack(tensors).float()


def _export(module, example, path):
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        # the TorchScript exporter: exports these CNNs in a fraction of the time of the torch.export-based
        # one and needs no onnxscript; torch >= 2.9 marks it deprecated, hence the filter below
        kwargs["dynamo"] = False
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(module, (example,), path, input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=OPSET,
                          do_constant_folding=True, **kwargs)


def _max_abs_diff(session, module, images, batch_sizes):
    worst = 0.0
    with torch.no_grad():
        for size in batch_sizes:
            for start in range(0, images.shape[0], size):
                batch = images[start:start + size]
                ours = module(batch.clone()).numpy()
                theirs = session.run(["features"], {"images": batch.numpy()})[0]
                if theirs.shape != ours.shape:
                    raise ExportError("onnxruntime gives features of shape {} for a batch of {}, PyTorch {}: the "
                                      "exported batch size is not dynamic".format(theirs.shape, batch.shape[0],
                                                                                 ours.shape))
                if not np.isfinite(theirs).all():
                    raise ExportError("onnxruntime gives non-finite features for real images")
                worst = max(worst, float(np.abs(theirs.astype(np.float64) - ours).max()))
    return worst


def export_onnx(cfg, output, images=None, tolerance=TOLERANCE, count=32):
    """Export the model of ``cfg`` (weights ``MODEL.WEIGHTS``) to ``output`` and check it; returns the largest
    absolute feature difference against PyTorch. Raises :class:`ExportError` (nothing written) when the
    export fails or differs by more than ``tolerance``."""
    ort = _runtime()
    if not str(output).endswith(".onnx"):
        raise ValueError("--output {!r} must end in .onnx".format(output))
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"  # exported and checked on the CPU: the file is device-independent
    cfg.freeze()
    cfg, model = load_trained_model(cfg)
    check = check_images(cfg, images, count)  # bad images fail before the (slow) export
    module = TestFeature(model, cfg.TEST.FLIP.ENABLED).eval()
    with torch.no_grad():
        reference = module(check[:2].clone())
    if not isinstance(reference, torch.Tensor) or reference.ndim != 2:
        raise ExportError("the model's eval output is {}, not an (N, D) feature tensor; only models whose eval "
                          "forward returns the feature can be exported".format(type(reference).__name__))

    tmp = tempfile.mkdtemp(prefix="export-onnx-")
    try:
        path = os.path.join(tmp, "model.onnx")
        try:
            _export(module, check[:2].clone(), path)
        except Exception as e:  # an operator ONNX cannot express, a data-dependent branch, ...
            raise ExportError("torch.onnx.export failed for {} ({}: {}); this model cannot be exported".format(
                type(model).__name__, type(e).__name__, e)) from e
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        # one image at a time and in batches: a graph that froze the example's batch size fails here
        diff = _max_abs_diff(session, module, check, (1, min(8, check.shape[0])))
        logger.info("max abs diff %.3g between onnxruntime and PyTorch on %d real images", diff, check.shape[0])
        if not diff <= tolerance:
            raise ExportError("the exported model differs from PyTorch by up to {:.3g} on real images (tolerance "
                              "{:g}); it is not written".format(diff, tolerance))
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(path, "rb") as f:
            atomic_write(output, lambda out: shutil.copyfileobj(f, out))
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    return diff
