"""TensorBoard's embedding projector: ``OUT/projector`` with one embedding per model.

Each embedding holds the query images then the gallery images (or a sample of ``max_points`` of them, drawn
with a fixed seed, in file order), a metadata table (``pid``, ``camid``, ``set`` = query / gallery,
``index`` in its file, ``file``) and square thumbnails (the person image letterboxed on white) for the
sprite. View it with ``tensorboard --logdir OUT/projector`` (PROJECTOR tab). The files are TensorBoard's own
(written by ``torch.utils.tensorboard.SummaryWriter.add_embedding``), not written atomically; a rerun into
the same folder replaces each model's files (``00000/<name>/``) and ``projector_config.pbtxt``.
"""
import contextlib
import io
import os
import re
import sys

import numpy as np

__all__ = ["projector_points", "projector_thumbnails", "write_projector", "SPRITE_LIMIT", "THUMBNAIL"]

#: the projector cannot show a sprite wider than this many pixels
SPRITE_LIMIT = 8192
#: thumbnail side when the sprite has room
THUMBNAIL = 64
METADATA_HEADER = ["pid", "camid", "set", "index", "file"]


def projector_points(num_query, num_gallery, max_points, seed=0):
    """(set, index) rows to embed: ("query", i) then ("gallery", j), at most ``max_points`` (0 = all)."""
    rows = [("query", i) for i in range(num_query)] + [("gallery", j) for j in range(num_gallery)]
    if 0 < max_points < len(rows):
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=max_points, replace=False))
        rows = [rows[i] for i in keep]
    return rows


def thumbnail_side(num_points):
    """Thumbnail side so that the square sprite of ``num_points`` stays within SPRITE_LIMIT."""
    per_row = int(np.ceil(np.sqrt(max(1, num_points))))
    return max(1, min(THUMBNAIL, SPRITE_LIMIT // per_row))


def projector_thumbnails(paths, store):
    """(N, 3, S, S) float32 array in [0, 1]: each image resized to S × S/2 and centred on white."""
    from PIL import Image

    side = thumbnail_side(len(paths))
    width = max(1, side // 2)
    out = np.empty((len(paths), 3, side, side), dtype=np.float32)
    for i, path in enumerate(paths):
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(store.tile(path, (side, width)), ((side - width) // 2, 0))
        out[i] = np.asarray(square, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return out


def _tag(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "model"


def write_projector(folder, models):
    """Write the projector files.

    Args:
        folder: the log folder (``OUT/projector``).
        models: [(name, feats (N, D), metadata rows, thumbnails (N, 3, S, S) or None)].
    Returns:
        ``folder``.
    """
    import torch
    from torch.utils.tensorboard import SummaryWriter

    os.makedirs(folder, exist_ok=True)
    writer = SummaryWriter(folder)
    try:
        for name, feats, metadata, thumbnails in models:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                writer.add_embedding(torch.from_numpy(np.ascontiguousarray(feats)), metadata=metadata,
                                     metadata_header=METADATA_HEADER,
                                     label_img=None if thumbnails is None else torch.from_numpy(thumbnails),
                                     tag=_tag(name), global_step=0)
            # a rerun into the same folder replaces the embedding's files: torch's warning about it is noise
            for line in printed.getvalue().splitlines():
                if "Embedding dir exists" not in line:
                    print(line, file=sys.stdout)
    finally:
        writer.close()
    return folder
