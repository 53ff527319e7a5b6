#!/usr/bin/env python
"""Train or evaluate a fastreid model with the fastreid_ewth plugin.

    python tools/train_net.py --config-file projects/AGW_HNEWTH.yml
    python tools/train_net.py --config-file projects/AGW_HNEWTH.yml --eval-only MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file projects/Demo.yml --num-gpus 2 SOLVER.IMS_PER_BATCH 128
    python tools/train_net.py --config-file projects/AGW_HNEWTH.yml --resume    # continue OUTPUT_DIR's run

Same command line as fastreid's ``tools/train_net.py``; trailing ``KEY VALUE`` pairs override the config.
``--num-gpus N`` starts N processes (torch.distributed): one per GPU with NCCL, or N CPU processes with gloo
on a machine without CUDA. A non-finite loss ends the run with a non-zero exit status.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_ewth  # noqa: E402,F401  (patches fastreid, registers the plugin)
from fastreid.engine import default_argument_parser  # noqa: E402

from fastreid_ewth.engine import EWTHTrainer, setup_cfg  # noqa: E402
from fastreid_ewth.engine.evaluate import evaluate_checkpoint  # noqa: E402
from fastreid_ewth.engine.launch import launch  # noqa: E402


def main(args):
    cfg = setup_cfg(args)
    if args.eval_only:
        return evaluate_checkpoint(cfg)
    trainer = EWTHTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
