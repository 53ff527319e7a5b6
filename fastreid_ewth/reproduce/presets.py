"""Named sets of runs for ``tools/reproduce.py --preset``.

``synth``: the loss comparison this machine can afford — ``projects/Demo.yml`` (the BoT recipe shrunk:
ResNet-18 from scratch at 64×32, 12 epochs) on SynthReID, one run per loss variant and seed. The
variants differ only in ``MODEL.LOSSES.EWTH.VARIANT``; every other setting, and the seeds, are shared,
so the spread over seeds says how much of a difference between variants is noise.
"""
import os
from typing import NamedTuple, Tuple

__all__ = ["Preset", "PRESETS"]


class Preset(NamedTuple):
    # (name, config file relative to the projects folder -- ``--projects``, a checkout's projects/ --, opts)
    configs: Tuple[Tuple[str, str, Tuple[str, ...]], ...]
    datasets: Tuple[str, ...]
    seeds: Tuple[int, ...]
    output: str
    opts: Tuple[str, ...]  # passed to every run, before the user's --opts
    jobs: int  # trainings at once (--jobs default)
    title: str
    note: str
    # (baseline config name, names of the configs compared with it): paired differences in the report;
    # empty: every config against the first
    baselines: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()


def _variant(name):
    return (name, "Demo.yml", ("MODEL.LOSSES.EWTH.VARIANT", name))


PRESETS = {
    "synth": Preset(
        configs=tuple(_variant(v) for v in ("TH", "HNEWTH")),
        datasets=("SynthReID",),
        seeds=(0, 1, 2),
        output="logs/compare",
        # a checkpoint half-way lets an interrupted `make compare` resume a run instead of restarting it
        opts=("SOLVER.CHECKPOINT_PERIOD", "6"),
        # two single-threaded trainings use 2 cores better than one two-threaded one (see cli._thread_env)
        jobs=2,
        title="TH vs HNEWTH on SynthReID (small BoT, CPU)",
        note="Every run is `projects/Demo.yml` (BoT recipe shrunk: ResNet-18 from scratch, 64×32 input, 12 epochs, "
             "P×K = 16×4) with `MODEL.LOSSES.EWTH.VARIANT` set to the row's variant, once per seed (`SEED`). "
             "Values are mean ± sample standard deviation over the seeds. SynthReID is a small synthetic set, not "
             "Market1501: the numbers compare the losses on it, they do not stand in for the paper's.",
    ),
}


# The demo's small backbone and schedule (projects/Demo.yml), for the zoo's two recipes
_SMALL = ("MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False",
          "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "INPUT.PADDING.SIZE", "4",
          "INPUT.REA.ENABLED", "False", "DATALOADER.NUM_WORKERS", "1",
          "SOLVER.MAX_EPOCH", "12", "SOLVER.STEPS", "[9]", "TEST.EVAL_PERIOD", "12",
          # a checkpoint half-way lets an interrupted `make zoo` resume a run instead of restarting it
          "SOLVER.CHECKPOINT_PERIOD", "6")
# BoT keeps a warm-up, shortened as in the demo; the plain recipe has none
_RECIPE_OPTS = {"Plain": (), "BoT": ("SOLVER.WARMUP_EPOCHS", "1", "SOLVER.WARMUP_FACTOR", "0.1")}

#: The zoo's rows: the torchreid-based comparison's twelve losses (plain recipe), then the BoT-style
#: codebase's ten classification + pairwise pairs, one project config each in projects/zoo/.
ZOO_PLAIN = ("Plain_Softmax", "Plain_Triplet", "Plain_SoftmaxTriplet", "Plain_CenterSoftmax", "Plain_NPair",
             "Plain_Histogram", "Plain_Focal", "Plain_MultiSimilarity", "Plain_SphereFace", "Plain_SphereFaceM4",
             "Plain_CosFace", "Plain_ArcFace")
ZOO_BOT = ("BoT_CE_Triplet", "BoT_CE_Contrastive", "BoT_CE_Cosface", "BoT_CELS_Triplet", "BoT_CELS_Contrastive",
           "BoT_CELS_Cosface", "BoT_CosFace_Triplet", "BoT_CosFace_Cosface", "BoT_ArcFace_Triplet",
           "BoT_Circle_Circle")


def _zoo(name):
    return (name, os.path.join("zoo", name + ".yml"), _RECIPE_OPTS[name.split("_", 1)[0]])


PRESETS["zoo"] = Preset(
    configs=tuple(_zoo(n) for n in ZOO_PLAIN + ZOO_BOT),
    datasets=("SynthReID",),
    seeds=(0, 1, 2),
    output="logs/zoo",
    opts=_SMALL,
    jobs=2,
    title="The loss zoo on SynthReID (both recipes, small backbone, CPU)",
    note="Every row is its `projects/zoo/` config (the plain recipe of `configs/Base-Plain.yml` or the BoT recipe of "
         "`configs/Base-BoT.yml`, with the row's losses) shrunk as `projects/Demo.yml` is: ResNet-18 from scratch, "
         "64×32 input, 12 epochs with the lr decayed at epoch 9 (BoT: 1 warm-up epoch; plain: none), once per seed "
         "(`SEED`). Values are mean ± sample standard deviation over the seeds. SynthReID is a small synthetic set: "
         "the numbers compare the losses on it, they do not stand in for the published ones.",
    baselines=(("Plain_SoftmaxTriplet", tuple(n for n in ZOO_PLAIN if n != "Plain_SoftmaxTriplet")),
               ("BoT_CE_Triplet", tuple(n for n in ZOO_BOT if n != "BoT_CE_Triplet"))),
)
