"""Train or evaluate a fastreid model with the fastreid_ewth plugin: ``python -m fastreid_ewth.train``.

    python -m fastreid_ewth.train --config-file projects/AGW_HNEWTH.yml
    python -m fastreid_ewth.train --config-file projects/AGW_HNEWTH.yml --eval-only MODEL.WEIGHTS out/model_final.pth
    python -m fastreid_ewth.train --config-file projects/Demo.yml --num-gpus 2 SOLVER.IMS_PER_BATCH 128
    python -m fastreid_ewth.train --config-file projects/AGW_HNEWTH.yml --resume    # continue OUTPUT_DIR's run

The command line is fastreid's ``default_argument_parser`` (that of fastreid's ``tools/train_net.py``):
``--config-file``, ``--resume``, ``--eval-only``, ``--num-gpus``, ``--num-machines``, ``--machine-rank``,
``--dist-url`` and trailing ``KEY VALUE`` pairs that override the config. ``--num-gpus N`` starts N
processes (torch.distributed): one per GPU with NCCL, or N CPU processes with gloo on a machine without
CUDA. Any error, a non-finite loss included, ends the command with a non-zero exit status.
SIGTERM, SIGUSR1, SIGUSR2 or Ctrl-C (SIGINT) stop a training after its current step: it writes
``model_interrupted.pth`` (the whole training state at that iteration) and exits with status 75
(``reliability.preempt.EXIT_INTERRUPTED``); ``--resume`` continues from the next step.
A training locks its ``OUTPUT_DIR`` for as long as it runs: a second training into the same folder stops
at once, naming the first one (``--eval-only`` takes no lock).

The checkout's ``tools/train_net.py`` is this module with the checkout put on ``sys.path``; this module
needs nothing but the installed package (config files are the user's: pass their paths).
"""
import sys

import fastreid_ewth  # noqa: F401  (patches fastreid, registers the plugin)
from fastreid.engine import default_argument_parser

from fastreid_ewth.engine import EWTHTrainer, evaluate_checkpoint, launch, setup_cfg
from fastreid_ewth.reliability.lock import release_output_dir
from fastreid_ewth.reliability.preempt import stop_requests

__all__ = ["build_parser", "main", "run"]


def main(args):
    """One process of a run: set the config up, then evaluate (``--eval-only``) or train -> results.

    A training holds the lock on its ``OUTPUT_DIR`` (taken by ``setup_cfg``) until it ends, however it ends.
    """
    cfg = setup_cfg(args)
    if args.eval_only:
        return evaluate_checkpoint(cfg)
    # from here on a stop signal waits for the first step (nothing to save before it): the exit status is
    # EXIT_INTERRUPTED however early it comes
    with stop_requests().installed():
        try:
            trainer = EWTHTrainer(cfg)
            trainer.resume_or_load(resume=args.resume)
            return trainer.train()
        finally:
            release_output_dir(cfg.OUTPUT_DIR)


def build_parser(prog=None):
    """fastreid's ``default_argument_parser``, named after the command that runs it."""
    parser = default_argument_parser()
    parser.prog = prog or "python -m fastreid_ewth.train"
    return parser


def run(argv=None, prog=None):
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run :func:`main` in ``--num-gpus`` processes."""
    args = build_parser(prog).parse_args(argv)
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0


if __name__ == "__main__":
    # run the functions of the imported module, not of this ``__main__`` copy: the processes that
    # ``--num-gpus`` spawns unpickle ``main`` by its module name
    from fastreid_ewth.train import run as _run

    sys.exit(_run())
