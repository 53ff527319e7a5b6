#!/usr/bin/env python
"""Benchmark: seconds per training step of ``EWTHTrainer`` against fastreid's own ``DefaultTrainer``.

    python tools/bench_trainer.py                        # 50 rounds of 2 steps per trainer, 1 thread
    python tools/bench_trainer.py --threads 2 --verbose
    python tools/bench_trainer.py --against DefaultTrainer   # two DefaultTrainers: the bench's own noise

Both trainers are built in this one process on the same config: fastreid's stock bagtricks recipe shrunk to a
CPU (fastreid's ``Baseline``, ResNet-18 from scratch, BNNeck ``EmbeddingHead``, CE + hard-mining triplet,
64x32 inputs, 64 images per step of 16 identities x 4, ``NaiveIdentitySampler``, one loader worker, a fixed
seed) on the ``SynthReID`` set this package registers (generated under ``--datasets`` on first use). Each has
its own ``OUTPUT_DIR`` in a temporary folder; evaluation and checkpoints never come up.

A step is what fastreid's ``TrainerBase.train`` does per iteration: ``before_step`` (every hook),
``run_step``, ``after_step`` (every hook), ``iter += 1``, inside the trainer's ``EventStorage``, after
``before_train`` and ``before_epoch``. After a warm-up of each, the trainers take turns: ``--rounds`` rounds
of ``--iters`` timed steps each, the one that goes first alternating from round to round, so that both see
the same machine load; short turns keep the two halves of a round close in time. Each trainer's loader
worker keeps preparing its next batches meanwhile, as it would in training.

Reported per trainer: median and lower quartile of the step time, CPU seconds per step (the training
process's, all threads, plus the trainer's own loader worker's) and fastreid's ``data_time`` (how long a step
waited for its batch). Then the ratio ``EWTHTrainer / DefaultTrainer`` three ways: of the lower-quartile step
times (the steps least disturbed by other jobs), of CPU time, and (the goal, <= 1.02) the median over rounds
of the per-round ratio of s/step.

One intra-op thread by default: on a 2-core machine shared with other jobs, two threads plus the loader
worker oversubscribe the cores and the step time swings by several times from one turn to the next.
"""
import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time

GOAL = 1.02


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=2, help="timed steps per trainer and round (default 2)")
    parser.add_argument("--rounds", type=int, default=50, help="rounds, alternating who goes first (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per trainer first (default 10)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads for the training process (default 1; 0: torch's own)")
    parser.add_argument("--verbose", action="store_true", help="print every round")
    parser.add_argument("--build-order", choices=("default-first", "other-first"), default="default-first")
    parser.add_argument("--against", choices=("EWTHTrainer", "DefaultTrainer"), default="EWTHTrainer",
                        help="the trainer measured against fastreid's DefaultTrainer; DefaultTrainer: a second "
                             "one, to see the bench's own noise and bias (expected ratio 1)")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--datasets", default=None,
                        help="$FASTREID_DATASETS (default: $FASTREID_DATASETS if set, else a folder under the "
                             "system's temporary directory, reused across runs)")
    return parser.parse_args(argv)


def bench_cfg(output_dir, seed):
    """fastreid's bagtricks recipe (defaults + Base-bagtricks' choices), small enough for a CPU."""
    from fastreid.config import get_cfg

    from fastreid_ewth import add_ewth_config

    cfg = add_ewth_config(get_cfg())
    cfg.merge_from_list([
        "MODEL.META_ARCHITECTURE", "Baseline",
        "MODEL.DEVICE", "cpu",
        "MODEL.BACKBONE.NAME", "build_resnet_backbone",
        "MODEL.BACKBONE.NORM", "BN",
        "MODEL.BACKBONE.DEPTH", "18x",
        "MODEL.BACKBONE.LAST_STRIDE", 1,
        "MODEL.BACKBONE.FEAT_DIM", 512,
        "MODEL.BACKBONE.WITH_IBN", False,
        "MODEL.BACKBONE.PRETRAIN", False,
        "MODEL.HEADS.NAME", "EmbeddingHead",
        "MODEL.HEADS.NORM", "BN",
        "MODEL.HEADS.WITH_BNNECK", True,
        "MODEL.HEADS.POOL_LAYER", "GlobalAvgPool",
        "MODEL.HEADS.NECK_FEAT", "before",
        "MODEL.HEADS.CLS_LAYER", "Linear",
        "MODEL.LOSSES.NAME", ("CrossEntropyLoss", "TripletLoss"),
        "MODEL.LOSSES.CE.EPSILON", 0.1,
        "MODEL.LOSSES.CE.SCALE", 1.0,
        "MODEL.LOSSES.TRI.MARGIN", 0.3,
        "MODEL.LOSSES.TRI.HARD_MINING", True,
        "MODEL.LOSSES.TRI.SCALE", 1.0,
        "INPUT.SIZE_TRAIN", [64, 32],
        "INPUT.SIZE_TEST", [64, 32],
        "INPUT.REA.ENABLED", True,
        "INPUT.REA.PROB", 0.5,
        "INPUT.FLIP.ENABLED", True,
        "INPUT.PADDING.ENABLED", True,
        "INPUT.PADDING.SIZE", 10,
        "DATASETS.NAMES", ("SynthReID",),
        "DATASETS.TESTS", ("SynthReID",),
        "DATALOADER.SAMPLER_TRAIN", "NaiveIdentitySampler",
        "DATALOADER.NUM_INSTANCE", 4,
        "DATALOADER.NUM_WORKERS", 1,
        "SOLVER.OPT", "Adam",
        "SOLVER.BASE_LR", 3.5e-4,
        "SOLVER.WEIGHT_DECAY", 5e-4,
        "SOLVER.IMS_PER_BATCH", 64,
        "SOLVER.MAX_EPOCH", 120,
        "SOLVER.SCHED", "MultiStepLR",
        "SOLVER.STEPS", [40, 90],
        "SOLVER.WARMUP_FACTOR", 0.1,
        "SOLVER.WARMUP_ITERS", 2000,
        "SOLVER.CHECKPOINT_PERIOD", 1000,  # epochs: never within a benchmark
        "TEST.EVAL_PERIOD", 1000,
        "TEST.IMS_PER_BATCH", 128,
        "SEED", seed,
        "OUTPUT_DIR", str(output_dir),
    ])
    return cfg


def _child_processes():
    """Process ids of this process's children (the loader workers); empty where /proc does not tell."""
    pids = set()
    try:
        for task in os.listdir("/proc/self/task"):
            with open("/proc/self/task/{}/children".format(task)) as f:
                pids.update(int(p) for p in f.read().split())
    except OSError:
        pass
    return pids


def _cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` so far (0 if it is gone or /proc does not tell)."""
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Stepper:
    """One trainer, driven per step as fastreid's ``TrainerBase.train`` drives it."""

    def __init__(self, name, trainer):
        self.name = name
        self.trainer = trainer
        self.workers = set()  # its loader's worker processes, once known

    def start(self):
        from fastreid.utils.events import EventStorage

        t = self.trainer
        t.resume_or_load(resume=False)
        t.iter = t.start_iter = 0
        # fastreid's metrics go to the innermost open storage: each trainer's is open only while it steps
        t.storage = EventStorage(t.start_iter)
        with t.storage:
            t.before_train()
            t.epoch = 0
            t.before_epoch()

    def steps(self, n):
        """Run ``n`` steps; returns ([wall seconds of each step], CPU seconds, [data_time of each step]).

        CPU seconds: this process's (all its threads: the other trainer's are idle, waiting on a full queue)
        plus this trainer's loader workers'.
        """
        t = self.trainer
        walls, data_times = [], []
        with t.storage:
            cpu = time.process_time() + sum(_cpu_seconds(p) for p in self.workers)
            for _ in range(n):
                begin = time.perf_counter()
                t.before_step()
                t.run_step()
                t.after_step()
                t.iter += 1
                walls.append(time.perf_counter() - begin)
                data_times.append(t.storage.history("data_time").latest())
            cpu = time.process_time() + sum(_cpu_seconds(p) for p in self.workers) - cpu
        return walls, cpu, data_times


def build(name, trainer_class, root, seed):
    from fastreid.utils.env import seed_all_rng

    output_dir = os.path.join(root, name)
    os.makedirs(output_dir)  # fastreid's default_setup would have made it
    seed_all_rng(seed)  # the same sampler seed, model initialisation and augmentations for both
    return Stepper(name, trainer_class(bench_cfg(output_dir, seed)))


def main(argv=None):
    args = parse_args(argv)
    datasets = args.datasets or os.environ.get("FASTREID_DATASETS") or os.path.join(
        tempfile.gettempdir(), "fastreid_ewth_bench_datasets")
    # fastreid reads it once, when its data module is imported (which importing fastreid_ewth does)
    os.environ["FASTREID_DATASETS"] = datasets

    import fastreid_ewth  # noqa: F401  (fastreid compatibility patches before any fastreid import)
    import torch

    from fastreid.engine import DefaultTrainer

    from fastreid_ewth.data import ensure_synth_reid
    from fastreid_ewth.engine import EWTHTrainer

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ensure_synth_reid(datasets)
    other_name = "EWTHTrainer" if args.against == "EWTHTrainer" else "DefaultTrainer_2"
    with tempfile.TemporaryDirectory(prefix="bench_trainer.") as root:
        # what the trainers log (the model, the data set, ...) goes to a file, the console keeps the results
        with open(os.path.join(root, "trainers.log"), "w") as log, \
                contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            other = {"EWTHTrainer": EWTHTrainer, "DefaultTrainer": DefaultTrainer}[args.against]
            names = [("DefaultTrainer", DefaultTrainer), (other_name, other)]
            if args.build_order == "other-first":
                names.reverse()
            steppers = [build(name, cls, root, args.seed) for name, cls in names]
            known = set()
            for s in steppers:
                s.start()
                s.steps(1)  # its loader's workers exist after its first batch
                s.workers = _child_processes() - known
                known |= s.workers
        logging.getLogger("fastreid").setLevel(logging.WARNING)
        logging.getLogger("fastreid_ewth").setLevel(logging.WARNING)
        print("torch {}, {} intra-op thread(s), {} CPU core(s), load average {:.1f}; {} warm-up steps, then {} "
              "rounds x {} steps, per trainer".format(torch.__version__, torch.get_num_threads(), os.cpu_count(),
                                                      os.getloadavg()[0], args.warmup, args.rounds, args.iters),
              flush=True)
        for s in steppers:
            s.steps(args.warmup)
        names = [s.name for s in steppers]
        walls = {name: [] for name in names}  # every timed step
        per_round = {name: [] for name in names}  # mean s/step of each round
        cpu_per_round = {name: [] for name in names}
        data_time = {name: [] for name in names}
        for r in range(args.rounds):
            order = steppers if r % 2 == 0 else steppers[::-1]
            for s in order:
                step_walls, cpu, waits = s.steps(args.iters)
                walls[s.name].extend(step_walls)
                per_round[s.name].append(sum(step_walls) / args.iters)
                cpu_per_round[s.name].append(cpu / args.iters)
                data_time[s.name].extend(waits)
            if args.verbose:
                print("round {:2d} ({:14s} first): s/step DefaultTrainer {:.4f}, {} {:.4f}, ratio {:.3f}".format(
                    r + 1, order[0].name, per_round["DefaultTrainer"][-1], other_name, per_round[other_name][-1],
                    per_round[other_name][-1] / per_round["DefaultTrainer"][-1]), flush=True)

    def lower_quartile(values):
        return statistics.quantiles(values, n=4)[0] if len(values) > 1 else values[0]

    for name in names:
        print("{:16s} s/step: median {:.4f}, lower quartile {:.4f}; CPU s/step: median {:.4f}; data_time: median "
              "{:.2f} ms, mean {:.2f} ms".format(name, statistics.median(walls[name]), lower_quartile(walls[name]),
                                                 statistics.median(cpu_per_round[name]),
                                                 1e3 * statistics.median(data_time[name]),
                                                 1e3 * statistics.mean(data_time[name])))
    ratios = [o / d for o, d in zip(per_round[other_name], per_round["DefaultTrainer"])]
    cpu_ratios = [o / d for o, d in zip(cpu_per_round[other_name], cpu_per_round["DefaultTrainer"])]
    ratio = statistics.median(ratios)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratio] * 3
    print("ratio {} / DefaultTrainer:".format(other_name))
    print("  lower-quartile step time {:.3f} (the least disturbed steps of each)".format(
        lower_quartile(walls[other_name]) / lower_quartile(walls["DefaultTrainer"])))
    print("  CPU time per step (this process + the trainer's loader worker), median over rounds {:.3f}".format(
        statistics.median(cpu_ratios)))
    print("  s/step, median over {} rounds {:.3f} (quartiles {:.3f} .. {:.3f}); goal <= {:.2f}: {}".format(
        len(ratios), ratio, quartiles[0], quartiles[2], GOAL, "met" if ratio <= GOAL else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
