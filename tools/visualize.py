#!/usr/bin/env python
"""Pictures of query and gallery embedding files: rank lists, two models side by side, t-SNE, distances, ROC.

    python tools/visualize.py --query emb/query.npz --gallery emb/gallery.npz --output vis
    python tools/visualize.py --query emb/query.npz --gallery emb/gallery.npz --output vis --sort best -k 20
    python tools/visualize.py --query a/query.npz --gallery a/gallery.npz --compare-query b/query.npz \
        --compare-gallery b/gallery.npz --names BoT AGW --sort diff --output vis-ab --projector

Writes PNG files and ``OUT/index.html`` (open it in a browser; it explains every picture). See
``docs/visualize.md`` and ``--help``. This script is ``fastreid_ewth.visualize.main`` run from a checkout: it
puts the checkout first on ``sys.path``, so it works without installing the package.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastreid_ewth.visualize import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="tools/visualize.py"))
