#!/usr/bin/env python
"""Train or evaluate a fastreid model with the fastreid_ewth plugin.

    python tools/train_net.py --config-file projects/AGW_HNEWTH.yml
    python tools/train_net.py --config-file projects/AGW_HNEWTH.yml --eval-only MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file projects/Demo.yml --num-gpus 2 SOLVER.IMS_PER_BATCH 128
    python tools/train_net.py --config-file projects/AGW_HNEWTH.yml --resume    # continue OUTPUT_DIR's run

Same command line as fastreid's ``tools/train_net.py``; trailing ``KEY VALUE`` pairs override the config.
``--num-gpus N`` starts N processes (torch.distributed): one per GPU with NCCL, or N CPU processes with gloo
on a machine without CUDA. A non-finite loss ends the run with a non-zero exit status.

This script is ``python -m fastreid_ewth.train`` (``fastreid_ewth/train.py``) run from a checkout: it puts
the checkout first on ``sys.path``, so it works without installing the package.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastreid_ewth.train import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(prog="tools/train_net.py"))
