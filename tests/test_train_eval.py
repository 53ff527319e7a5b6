"""End to end through tools/train_net.py: train 2 epochs on a slice of SynthReID on CPU, then --eval-only (with
``python -m fastreid_ewth.train``, the same command installed with the package)."""
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import REPO

TRAIN_NET = str(REPO / "tools" / "train_net.py")
TINY = ["SOLVER.MAX_EPOCH", "2", "SOLVER.STEPS", "[2]",
        "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "2", "DATALOADER.NUM_WORKERS", "0"]


def _results_table(output):
    """Parse fastreid's results table: {column: value-as-printed}."""
    header = [line for line in output.splitlines() if line.startswith("| Dataset")]
    row = [line for line in output.splitlines() if line.startswith("| SynthReID")]
    assert header and row, output[-3000:]
    names = [c.strip() for c in header[-1].strip("|").split("|")]
    values = [c.strip() for c in row[-1].strip("|").split("|")]
    return dict(zip(names, values))


def _train_net(*args, env=None, module=False):
    command = ["-m", "fastreid_ewth.train"] if module else [TRAIN_NET]
    res = subprocess.run([sys.executable, *command, *args], capture_output=True, text=True, env=env, cwd=REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Command Line Args:" in res.stdout
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def slice_env(small_root):
    """The environment of the trainings here: FASTREID_DATASETS is a 16-identity slice of SynthReID."""
    return dict(os.environ, FASTREID_DATASETS=str(small_root))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, slice_env):
    out = tmp_path_factory.mktemp("demo2ep")
    log = _train_net("--config-file", "projects/Demo.yml", *TINY, "OUTPUT_DIR", str(out), env=slice_env)
    return out, log


def test_training_writes_checkpoint_metrics_and_table(trained):
    out, log = trained
    assert (out / "model_final.pth").is_file()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    table = _results_table(log)
    assert 0.0 <= float(table["mAP"]) <= 100.0
    with open(out / "metrics.json") as f:
        records = [json.loads(line) for line in f if line.strip()]
    losses = [r["total_loss"] for r in records if "total_loss" in r]
    assert losses and all(v == v for v in losses)  # finite, logged
    if not torch.cuda.is_available():
        assert "CUDA is not available: running on cpu" in log
        assert "AMP switched off" in log


def test_weights_changed_during_training(trained, tmp_path):
    out, _ = trained
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    # the same seed and config build the same initial weights: training must have moved them
    sys.path.insert(0, str(REPO))
    import fastreid_ewth  # noqa: F401
    from fastreid_ewth.engine import EWTHTrainer
    from fastreid.config import get_cfg
    from fastreid_ewth.config import add_ewth_config
    from fastreid.utils.env import seed_all_rng

    cfg = add_ewth_config(get_cfg())
    cfg.merge_from_file(str(REPO / "projects" / "Demo.yml"))
    cfg.MODEL.HEADS.NUM_CLASSES = state["heads.weight"].shape[0]
    seed_all_rng(0)
    init = EWTHTrainer.build_model(cfg).state_dict()
    moved = [k for k in state if k.endswith("weight") and not torch.equal(state[k], init[k])]
    assert "backbone.conv1.weight" in moved and "heads.weight" in moved


def test_eval_only_reproduces_the_final_metrics(trained, tmp_path, slice_env):
    out, log = trained
    eval_log = _train_net("--config-file", "projects/Demo.yml", "--eval-only",
                          "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path), module=True,
                          env=slice_env)
    assert _results_table(eval_log) == _results_table(log)


def test_eval_only_with_missing_weights_is_an_error(tmp_path):
    res = subprocess.run([sys.executable, TRAIN_NET, "--config-file", "projects/Demo.yml", "--eval-only",
                          "MODEL.WEIGHTS", str(tmp_path / "nope.pth"), "OUTPUT_DIR", str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode != 0
    assert "nope.pth" in res.stderr and "does not exist" in res.stderr


OUTSIDE_SCRIPT = textwrap.dedent("""
    import os
    import torch
    import fastreid_ewth
    from fastreid.config import get_cfg
    from fastreid.data.datasets import DATASET_REGISTRY
    from fastreid.engine import DefaultTrainer

    assert DATASET_REGISTRY.get("SynthReID").__name__ == "SynthReID"
    cfg = get_cfg()  # fastreid's stock defaults: Baseline, EmbeddingHead, CE
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", 512,
                         "MODEL.LOSSES.NAME", ("CrossEntropyLoss", "TripletLoss"),
                         "INPUT.SIZE_TRAIN", [64, 32], "INPUT.SIZE_TEST", [64, 32],
                         "DATASETS.NAMES", ("SynthReID",), "DATASETS.TESTS", ("SynthReID",),
                         "DATALOADER.SAMPLER_TRAIN", "NaiveIdentitySampler", "DATALOADER.NUM_WORKERS", 0,
                         "SOLVER.OPT", "Adam", "SOLVER.BASE_LR", 3.5e-4, "SOLVER.IMS_PER_BATCH", 32,
                         "SOLVER.MAX_EPOCH", 1, "SOLVER.WARMUP_ITERS", 0, "OUTPUT_DIR", "out"])
    os.makedirs("out", exist_ok=True)  # fastreid's default_setup would make it
    trainer = DefaultTrainer(cfg)
    assert type(trainer.model).__name__ == "Baseline"
    before = trainer.model.backbone.conv1.weight.detach().clone()
    results = trainer.train()
    assert not torch.equal(before, trainer.model.backbone.conv1.weight), "weights did not change"
    print("OUTSIDE-OK", type(trainer.model).__name__, round(results["mAP"], 2))
""")


@pytest.mark.heavy
def test_plugin_from_outside_the_repo_keeps_vanilla_fastreid_working(tmp_path, slice_env):
    script = tmp_path / "use_plugin.py"
    script.write_text(OUTSIDE_SCRIPT)
    env = dict(slice_env, PYTHONPATH="")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert re.search(r"OUTSIDE-OK Baseline \d+\.\d+", res.stdout), res.stdout[-2000:]
