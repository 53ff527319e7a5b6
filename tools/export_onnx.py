#!/usr/bin/env python
r"""Export a trained model to ONNX and check it with onnxruntime on real images (max abs diff <= 1e-4).

    python tools/export_onnx.py --config-file projects/Demo.yml --output logs/demo/model.onnx \
        MODEL.WEIGHTS logs/demo/model_final.pth

Run from a checkout, it puts the checkout first on ``sys.path``, so it works without installing the package.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_ewth  # noqa: E402,F401  (fastreid compatibility patches before any fastreid import)
from fastreid_ewth.inference.cli import export_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(export_main(prog="tools/export_onnx.py"))
