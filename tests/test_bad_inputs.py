"""Bad input through tools/train_net.py: non-zero exit, a message naming the value and the fix, and
(for everything that can be checked up front) no OUTPUT_DIR left behind."""
import os
import shutil
import subprocess
import sys
import traceback

import pytest
import torch

from conftest import REPO

TRAIN_NET = str(REPO / "tools" / "train_net.py")


def run(tmp_path, *opts, config="projects/Demo.yml", eval_only=False, datasets=None):
    out = tmp_path / "out"
    args = [sys.executable, TRAIN_NET, "--config-file", config] + (["--eval-only"] if eval_only else [])
    args += list(opts) + ["OUTPUT_DIR", str(out)]
    env = dict(os.environ)
    if datasets is not None:
        env["FASTREID_DATASETS"] = str(datasets)
    res = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env)
    return res, out


def refused_in_process(tmp_path, monkeypatch, *opts, config="projects/Demo.yml"):
    """Run the command's entry point (what tools/train_net.py calls) in this process, expecting a refusal;
    returns (the traceback as the command would print it, OUTPUT_DIR).

    For the checks that run before anything is set up (nothing of one call stays behind for the next): a
    subprocess each would cost a torch + fastreid import. test_a_rejection_reaches_the_command_line takes one
    such refusal through the real command line."""
    from fastreid_ewth.train import run as train_run

    out = tmp_path / "out"
    monkeypatch.chdir(REPO)
    with pytest.raises(Exception) as raised:
        train_run(["--config-file", config] + list(opts) + ["OUTPUT_DIR", str(out)])
    return "".join(traceback.format_exception(raised.type, raised.value, raised.tb)), out


CASES = [
    ("unknown_loss", ["MODEL.LOSSES.NAME", '("CrossEntropyLoss", "TriHardLoss")'],
     ["MODEL.LOSSES.NAME: 'TriHardLoss' is not a registered loss", "registered losses: ArcFaceLoss, CenterLoss",
      "CrossEntropyLoss, EWTHLoss"]),
    ("unknown_variant", ["MODEL.LOSSES.EWTH.VARIANT", "HNEWTHX"],
     ["MODEL.LOSSES.EWTH.VARIANT is 'HNEWTHX'", "must be one of TH, TH_FN, HTH, HNTH, EWTH, NEWTH, HEWTH, HNEWTH"]),
    ("negative_margin", ["MODEL.LOSSES.EWTH.EW_MARGIN", "-0.2"],
     ["MODEL.LOSSES.EWTH.EW_MARGIN is -0.2", "margin >= 0"]),
    ("threshold", ["MODEL.LOSSES.EWTH.EW_THRESHOLD", "1.5"],
     ["MODEL.LOSSES.EWTH.EW_THRESHOLD is 1.5", "must be a number in [0, 1)"]),
    ("num_instance", ["DATALOADER.NUM_INSTANCE", "1"], ["DATALOADER.NUM_INSTANCE is 1", "K >= 2"]),
    ("batch_not_divisible", ["SOLVER.IMS_PER_BATCH", "62"],
     ["SOLVER.IMS_PER_BATCH 62", "not a multiple of DATALOADER.NUM_INSTANCE 4"]),
    ("missing_weights", ["MODEL.WEIGHTS", "/nonexistent/model_final.pth"],
     ["MODEL.WEIGHTS '/nonexistent/model_final.pth' does not exist"]),
    ("unknown_key", ["MODEL.LOSSES.EWTH.MARGN", "0.3"], ["Non-existent key: MODEL.LOSSES.EWTH.MARGN"]),
    ("bad_device", ["MODEL.DEVICE", "gpu0"], ["MODEL.DEVICE 'gpu0' is not a device", "'cpu'"]),
    ("stock_baseline_unknown_loss", ["MODEL.META_ARCHITECTURE", "Baseline", "MODEL.HEADS.NAME", "EmbeddingHead"],
     ["fastreid's Baseline computes only CrossEntropyLoss, TripletLoss, CircleLoss, Cosface and silently ignores "
      "['EWTHLoss']", "set MODEL.META_ARCHITECTURE EWTHBaseline"]),
]


@pytest.mark.parametrize("name, opts, messages", CASES, ids=[c[0] for c in CASES])
def test_rejected_before_anything_is_written(name, opts, messages, tmp_path, datasets_root, monkeypatch):
    shown, out = refused_in_process(tmp_path, monkeypatch, *opts)
    for message in messages:
        assert message in shown, shown[-2000:]
    assert not out.exists(), sorted(os.listdir(out))


def test_a_rejection_reaches_the_command_line(tmp_path, datasets_root):
    name, opts, messages = CASES[0]
    res, out = run(tmp_path, *opts)
    assert res.returncode != 0
    for message in messages:
        assert message in res.stderr, res.stderr[-2000:]
    assert not out.exists(), sorted(os.listdir(out))


def test_missing_dataset_folder_shows_layout(tmp_path):
    empty = tmp_path / "no_datasets"
    empty.mkdir()
    res, out = run(tmp_path, "DATASETS.NAMES", '("Market1501",)', "DATASETS.TESTS", '("Market1501",)',
                   datasets=empty)
    assert res.returncode != 0
    assert "dataset Market1501 not found" in res.stderr
    assert "FASTREID_DATASETS" in res.stderr and str(empty) in res.stderr
    assert "Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}" in res.stderr
    assert not out.exists()


def _synth_copy(datasets_root, tmp_path):
    root = tmp_path / "datasets"
    shutil.copytree(os.path.join(datasets_root, "SynthReID"), root / "SynthReID")
    return root


def test_empty_query_set(tmp_path, datasets_root):
    root = _synth_copy(datasets_root, tmp_path)
    for f in (root / "SynthReID" / "query").iterdir():
        f.unlink()
    res, out = run(tmp_path, datasets=root)
    assert res.returncode != 0
    assert "the query set of SynthReID is empty" in res.stderr
    assert not out.exists()


def test_corrupt_image_is_named(tmp_path, datasets_root):
    root = _synth_copy(datasets_root, tmp_path)
    victim = sorted((root / "SynthReID" / "query").iterdir())[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])  # truncated mid-scan
    res, out = run(tmp_path, "TEST.IMS_PER_BATCH", "32", eval_only=True, datasets=root)
    assert res.returncode != 0
    assert "cannot read image" in res.stderr and str(victim) in res.stderr, res.stderr[-2000:]
    assert not list(out.glob("*.pth"))


def test_weights_of_another_architecture_are_refused(tmp_path, datasets_root):
    sys.path.insert(0, str(REPO))
    from fastreid.config import get_cfg
    from fastreid_ewth import add_ewth_config
    from fastreid_ewth.engine import EWTHTrainer

    cfg = add_ewth_config(get_cfg())
    cfg.merge_from_file(str(REPO / "projects" / "Demo.yml"))  # ResNet-18
    cfg.MODEL.HEADS.NUM_CLASSES = 160
    weights = tmp_path / "demo_r18.pth"
    torch.save({"model": EWTHTrainer.build_model(cfg).state_dict()}, weights)
    res, out = run(tmp_path, "MODEL.WEIGHTS", str(weights), "DATASETS.TESTS", '("SynthReID",)',
                   config="projects/BoT_TH.yml", eval_only=True)  # ResNet-50
    assert res.returncode != 0
    assert "belongs to another architecture" in res.stderr
    assert "backbone.layer1.0.conv3.weight" in res.stderr  # a ResNet-50 key the ResNet-18 checkpoint lacks
    assert "backbone.layer1.0.conv1.weight: checkpoint (64, 64, 3, 3) vs model (64, 64, 1, 1)" in res.stderr
    assert "Rank-1" not in res.stdout + res.stderr  # nothing was evaluated
