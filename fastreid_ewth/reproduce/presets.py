"""Named sets of runs for ``tools/reproduce.py --preset``.

``synth``: the loss comparison this machine can afford — ``projects/Demo.yml`` (the BoT recipe shrunk:
ResNet-18 from scratch at 64×32, 12 epochs) on SynthReID, one run per loss variant and seed. The
variants differ only in ``MODEL.LOSSES.EWTH.VARIANT``; every other setting, and the seeds, are shared,
so the spread over seeds says how much of a difference between variants is noise.
"""
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
