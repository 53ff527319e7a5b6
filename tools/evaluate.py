#!/usr/bin/env python
"""Evaluate embedding files offline: the numbers of --eval-only, printed as fastreid's table.

    python tools/evaluate.py --query logs/demo/embeddings/query.npz --gallery logs/demo/embeddings/gallery.npz
    python tools/evaluate.py --query Q.npz --gallery G.npz --metric euclidean --rerank --aqe

Run from a checkout, it puts the checkout first on ``sys.path``, so it works without installing the package.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_ewth  # noqa: E402,F401  (fastreid compatibility patches before any fastreid import)
from fastreid_ewth.inference.cli import evaluate_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(evaluate_main(prog="tools/evaluate.py"))
