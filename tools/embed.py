#!/usr/bin/env python
r"""Embed a test set or a folder of images with a trained model: OUTPUT/query.npz + gallery.npz, or embeddings.npz.

    python tools/embed.py --config-file projects/Demo.yml --output logs/demo/embeddings \
        MODEL.WEIGHTS logs/demo/model_final.pth
    python tools/embed.py --config-file projects/Demo.yml --output out --images my_photos/ \
        MODEL.WEIGHTS logs/demo/model_final.pth

Run from a checkout, it puts the checkout first on ``sys.path``, so it works without installing the package.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_ewth  # noqa: E402,F401  (fastreid compatibility patches before any fastreid import)
from fastreid_ewth.inference.cli import embed_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(embed_main(prog="tools/embed.py"))
