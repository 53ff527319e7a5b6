"""Embed images with a trained model: the config's test set (query + gallery) or a plain folder of images.

The features are computed exactly as ``--eval-only`` computes them: the same test loader (transforms,
``TEST.IMS_PER_BATCH`` batches, in order), the same model built from the config with ``MODEL.WEIGHTS``, and
fastreid's own ``inference_on_dataset`` (eval mode, no grad, ``TEST.FLIP.ENABLED`` honoured), with a
collector in place of the evaluator. So an evaluation of the stored features gives ``--eval-only``'s numbers.
"""
import logging
import os

import numpy as np
import torch
from fastreid.data.common import CommDataset
from fastreid.data.transforms import build_transforms
from fastreid.evaluation.evaluator import DatasetEvaluator, inference_on_dataset

from ..data.own import IMAGE_EXTENSIONS, MARKET_NAME
from ..engine import EWTHTrainer, load_trained_model
from ..engine.recipe import make_test_loader
from .embeddings import Embeddings, save_embeddings

logger = logging.getLogger(__name__)

__all__ = ["embed_test_set", "embed_folder", "folder_images", "write_test_set_embeddings", "write_folder_embeddings",
           "QUERY_FILE", "GALLERY_FILE", "FOLDER_FILE"]

QUERY_FILE = "query.npz"
GALLERY_FILE = "gallery.npz"
FOLDER_FILE = "embeddings.npz"


class _Collector(DatasetEvaluator):
    """Keeps what ``inference_on_dataset`` hands an evaluator, with a progress bar over the batches."""

    def __init__(self, num_batches, progress, description):
        self._bar = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=num_batches, desc=description, unit="batch", dynamic_ncols=True)
        self.reset()

    def reset(self):
        self.feats, self.pids, self.camids, self.paths = [], [], [], []

    def process(self, inputs, outputs):
        # the evaluator's own conversion (ExactReidEvaluator.process): CPU, float32
        self.feats.append(outputs.detach().to("cpu", torch.float32).numpy())
        self.pids.append(torch.as_tensor(inputs["targets"]).cpu().numpy())
        self.camids.append(torch.as_tensor(inputs["camids"]).cpu().numpy())
        self.paths.extend(inputs["img_paths"])
        if self._bar is not None:
            self._bar.update(1)

    def evaluate(self):
        if self._bar is not None:
            self._bar.close()
        return {}

    def embeddings(self):
        return Embeddings(feats=np.concatenate(self.feats), pids=np.concatenate(self.pids),
                          camids=np.concatenate(self.camids), paths=np.asarray(self.paths))


def _collect(cfg, model, loader, description, progress):
    collector = _Collector(len(loader), progress, description)
    inference_on_dataset(model, loader, collector, flip_test=cfg.TEST.FLIP.ENABLED)
    return collector.embeddings()


def embed_test_set(cfg, model, dataset_name, progress=True):
    """``(query, gallery)`` :class:`Embeddings` of test set ``dataset_name`` (a name of ``DATASETS.TESTS``)."""
    loader, num_query = EWTHTrainer.build_test_loader(cfg, dataset_name)
    both = _collect(cfg, model, loader, "embedding " + dataset_name, progress)
    return both.rows(slice(0, num_query)), both.rows(slice(num_query, None))


def folder_images(folder):
    """``[(image, pid, camid)]`` of every image under ``folder`` (sub-folders too), sorted by path.

    Identity and camera are read from Market1501-style names (``0002_c3...``, camera counted from 1) and are
    ``-1`` for any other name.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError("--images {!r} is not a folder; pass a folder of images".format(folder))
    items = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            match = MARKET_NAME.match(name)
            pid, cam = (int(match.group(1)), int(match.group(2)) - 1) if match else (-1, -1)
            items.append((os.path.join(top, name), pid, cam))
    items.sort(key=lambda item: item[0])
    if not items:
        raise ValueError("--images {!r} holds no image (looked for {} files, sub-folders included)".format(
            folder, ", ".join(IMAGE_EXTENSIONS)))
    return items


def embed_folder(cfg, model, folder, progress=True):
    """:class:`Embeddings` of every image under ``folder`` (see :func:`folder_images`), with the test transforms."""
    test_set = CommDataset(folder_images(folder), build_transforms(cfg, is_train=False), relabel=False)
    loader, _ = make_test_loader(cfg, test_set, 0)
    return _collect(cfg, model, loader, "embedding " + folder, progress)


def _output_files(output, names):
    os.makedirs(output, exist_ok=True)
    return [os.path.join(output, n) for n in names]


def write_test_set_embeddings(cfg, output, progress=True):
    """Embed the test set of ``cfg`` (its one ``DATASETS.TESTS`` entry) into ``output``/query.npz and
    gallery.npz. Returns the two paths."""
    tests = tuple(cfg.DATASETS.TESTS)
    if len(tests) != 1:
        raise ValueError("DATASETS.TESTS is {}: tools/embed.py embeds one test set at a time; pass e.g. "
                         "DATASETS.TESTS '(\"{}\",)'".format(tests, tests[0] if tests else "SynthReID"))
    cfg, model = load_trained_model(cfg)
    query, gallery = embed_test_set(cfg, model, tests[0], progress)
    query_file, gallery_file = _output_files(output, (QUERY_FILE, GALLERY_FILE))
    save_embeddings(query_file, query)
    save_embeddings(gallery_file, gallery)
    logger.info("Wrote %d query and %d gallery embeddings (%d-d) of %s to %s and %s", len(query), len(gallery),
                query.feats.shape[1], tests[0], query_file, gallery_file)
    return query_file, gallery_file


def write_folder_embeddings(cfg, folder, output, progress=True):
    """Embed every image under ``folder`` into ``output``/embeddings.npz. Returns its path."""
    folder_images(folder)  # a bad folder fails before the model is built
    cfg, model = load_trained_model(cfg)
    embeddings = embed_folder(cfg, model, folder, progress)
    (path,) = _output_files(output, (FOLDER_FILE,))
    save_embeddings(path, embeddings)
    logger.info("Wrote %d embeddings (%d-d) of %s to %s", len(embeddings), embeddings.feats.shape[1], folder, path)
    return path
