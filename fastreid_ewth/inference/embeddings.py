"""Embedding files: what ``tools/embed.py`` writes and ``tools/evaluate.py`` / ``tools/visualize.py`` read.

One ``.npz`` file per image set (``query.npz``, ``gallery.npz`` or ``embeddings.npz``) holding four arrays
of one row per image, in the order the images were embedded:

==========  ===============  ==============================================================
``feats``   (N, D) float32   the test feature, as ``--eval-only`` computes it
``pids``    (N,) int64       identity; ``-1`` where unknown (a plain folder of images)
``camids``  (N,) int64       camera, 0-based as fastreid counts it; ``-1`` where unknown
``paths``   (N,) str         the image file
==========  ===============  ==============================================================

The file is written atomically (whole or absent) and read back with every array checked, so a file from
somewhere else that lacks an array or has rows of another length fails here with its name, not three
steps later inside an evaluation.
"""
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from ..files import atomic_write

__all__ = ["Embeddings", "save_embeddings", "load_embeddings", "ARRAYS"]

#: the arrays of an embedding file, in the order of the table above
ARRAYS = ("feats", "pids", "camids", "paths")


@dataclass
class Embeddings:
    """The four arrays of an embedding file (see the module docstring); ``source`` is the file it came from."""
    feats: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    paths: np.ndarray
    source: str = ""

    def __post_init__(self):
        name = self.source or "embeddings"
        feats = np.asarray(self.feats)
        if feats.ndim != 2 or not np.issubdtype(feats.dtype, np.floating):
            raise ValueError("{}: feats must be an (N, D) float array, got {} of shape {}".format(
                name, feats.dtype, tuple(feats.shape)))
        self.feats = np.ascontiguousarray(feats, dtype=np.float32)
        n = self.feats.shape[0]
        for key in ("pids", "camids", "paths"):
            value = np.asarray(getattr(self, key))
            if value.shape != (n,):
                raise ValueError("{}: {} has shape {} but feats has {} rows; every array holds one entry per "
                                 "image".format(name, key, tuple(value.shape), n))
            if key != "paths" and not np.issubdtype(value.dtype, np.integer):
                raise ValueError("{}: {} must be integers, got dtype {}".format(name, key, value.dtype))
            setattr(self, key, value.astype(str) if key == "paths" else value.astype(np.int64))
        if not np.isfinite(self.feats).all():
            bad = int((~np.isfinite(self.feats)).any(axis=1).sum())
            raise ValueError("{}: {} of {} feature rows hold NaN or inf; the model that made them diverged or "
                             "was fed broken images".format(name, bad, n))

    def __len__(self):
        return self.feats.shape[0]

    def rows(self, index):
        """The embeddings of the rows ``index`` selects (a slice, an index array or a boolean mask)."""
        return Embeddings(self.feats[index], self.pids[index], self.camids[index], self.paths[index], self.source)

    @property
    def labelled(self):
        """Whether every image has an identity and a camera (needed to evaluate)."""
        return bool(len(self)) and bool((self.pids >= 0).all() and (self.camids >= 0).all())


def save_embeddings(path, embeddings):
    """Write ``embeddings`` (an :class:`Embeddings`) to ``path`` (``.npz``), atomically."""
    if not str(path).endswith(".npz"):
        raise ValueError("embedding file {!r} must end in .npz".format(path))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    arrays = {k: getattr(embeddings, k) for k in ARRAYS}
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def load_embeddings(path):
    """Read an embedding file written by :func:`save_embeddings` (or by anything with the same arrays)."""
    if not os.path.isfile(path):
        raise FileNotFoundError("embedding file {!r} does not exist; write it with tools/embed.py --config-file C "
                                "--output DIR (DIR/query.npz, DIR/gallery.npz)".format(path))
    try:
        with np.load(path, allow_pickle=False) as data:
            files = list(data.files)
            arrays = {k: data[k] for k in ARRAYS if k in files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        # numpy reads a file that is not a zip archive as a pickle, and refuses it with a ValueError
        raise ValueError("embedding file {!r} cannot be read as .npz ({}: {}); it is damaged or not an "
                         "embedding file".format(path, type(e).__name__, e)) from None
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise ValueError("embedding file {!r} lacks the array(s) {} (it has {}); tools/embed.py writes "
                         "{}".format(path, missing, sorted(files), ", ".join(ARRAYS)))
    return Embeddings(source=str(path), **arrays)
