"""The 16 project configs: the BoT and AGW recipes of docs/recipes.md key by key, and each builds and trains
one step."""
import math

import pytest
import torch

from fastreid.config import get_cfg
from fastreid.utils.events import EventStorage

from fastreid_ewth import add_ewth_config
from fastreid_ewth.engine import EWTHTrainer

from conftest import REPO, synth_train_batch

VARIANTS = ["TH", "TH_FN", "HTH", "HNTH", "EWTH", "NEWTH", "HEWTH", "HNEWTH"]
PROJECTS = ["{}_{}".format(b, v) for b in ("BoT", "AGW") for v in VARIANTS]

# the recipes as docs/recipes.md and the paper describe them, written out here independently of the YAML files
COMMON = {
    "MODEL.META_ARCHITECTURE": "EWTHBaseline",
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.BACKBONE.DEPTH": "50x",
    "MODEL.BACKBONE.LAST_STRIDE": 1,
    "MODEL.BACKBONE.PRETRAIN": True,
    "MODEL.BACKBONE.WITH_IBN": False,
    "MODEL.BACKBONE.WITH_SE": False,
    "MODEL.HEADS.NAME": "EWTHEmbeddingHead",
    "MODEL.HEADS.WITH_BNNECK": True,
    "MODEL.HEADS.NECK_FEAT": "before",
    "MODEL.HEADS.CLS_LAYER": "Linear",
    "MODEL.HEADS.EMBEDDING_DIM": 0,
    "MODEL.LOSSES.CE.EPSILON": 0.1,
    "MODEL.LOSSES.EWTH.EW_THRESHOLD": 0.1,
    "MODEL.LOSSES.EWTH.MARGIN": 0.3,
    "INPUT.SIZE_TRAIN": [256, 128],
    "INPUT.SIZE_TEST": [256, 128],
    "INPUT.FLIP.ENABLED": True,
    "INPUT.FLIP.PROB": 0.5,
    "INPUT.PADDING.ENABLED": True,
    "INPUT.PADDING.SIZE": 10,
    "INPUT.REA.ENABLED": True,
    "INPUT.REA.PROB": 0.5,
    "DATALOADER.SAMPLER_TRAIN": "NaiveIdentitySampler",
    "DATALOADER.NUM_INSTANCE": 4,
    "SOLVER.IMS_PER_BATCH": 64,
    "SOLVER.OPT": "Adam",
    "SOLVER.BASE_LR": 3.5e-4,
    "SOLVER.WEIGHT_DECAY": 5e-4,
    "SOLVER.WEIGHT_DECAY_BIAS": 5e-4,
    "SOLVER.WEIGHT_DECAY_NORM": 5e-4,
    "SOLVER.MAX_EPOCH": 120,
    "SOLVER.SCHED": "MultiStepLR",
    "SOLVER.STEPS": [40, 70],
    "SOLVER.GAMMA": 0.1,
    "SOLVER.WARMUP_METHOD": "linear",
    "SOLVER.WARMUP_FACTOR": 0.01,
    "SOLVER.WARMUP_EPOCHS": 10,
    "TEST.METRIC": "cosine",
    "DATASETS.NAMES": ("Market1501",),
    "DATASETS.TESTS": ("Market1501",),
}
PER_BASE = {
    "BoT": {"MODEL.BACKBONE.WITH_NL": False, "MODEL.HEADS.POOL_LAYER": "GlobalAvgPool",
            "MODEL.LOSSES.NAME": ("CrossEntropyLoss", "EWTHLoss")},
    "AGW": {"MODEL.BACKBONE.WITH_NL": True, "MODEL.HEADS.POOL_LAYER": "GeneralizedMeanPoolingP",
            "MODEL.LOSSES.NAME": ("CrossEntropyLoss", "EWTHLoss", "CenterLoss"),
            "MODEL.LOSSES.CENTER.SCALE": 0.0005, "MODEL.LOSSES.CENTER.LR": 0.5},
}
TERMS = {  # variant -> metric-loss terms it logs
    "TH": {"loss_triplet"}, "TH_FN": {"loss_triplet"}, "HTH": {"loss_triplet"},
    "HNTH": {"loss_triplet", "loss_mean_neg"}, "EWTH": {"loss_triplet", "loss_ew"},
    "NEWTH": {"loss_triplet", "loss_mean_neg", "loss_ew"}, "HEWTH": {"loss_triplet", "loss_ew"},
    "HNEWTH": {"loss_triplet", "loss_mean_neg", "loss_ew"},
}


def expected(project):
    base, variant = project.split("_", 1)
    exp = dict(COMMON, **PER_BASE[base])
    exp["MODEL.LOSSES.EWTH.VARIANT"] = variant
    exp["MODEL.LOSSES.EWTH.NORM_FEAT"] = {"BoT": "max", "AGW": "l2"}[base] if variant == "TH_FN" else "none"
    exp["MODEL.LOSSES.EWTH.MEAN_NEG_MARGIN"] = 0.1 if project == "AGW_HNTH" else 0.3
    exp["MODEL.LOSSES.EWTH.EW_MARGIN"] = 0.2 if project == "AGW_EWTH" else 0.3
    return exp


def load(project):
    cfg = add_ewth_config(get_cfg())
    cfg.merge_from_file(str(REPO / "projects" / (project + ".yml")))
    return cfg


def lookup(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("project", PROJECTS)
def test_project_matches_spec(project):
    cfg = load(project)
    for key, value in expected(project).items():
        got = lookup(cfg, key)
        if isinstance(value, float):
            assert math.isclose(got, value, rel_tol=1e-9), (key, got, value)
        elif isinstance(value, (list, tuple)):
            assert list(got) == list(value), (key, got, value)
        else:
            assert got == value, (key, got, value)


def test_project_files_change_only_the_loss_section():
    for project in PROJECTS:
        text = (REPO / "projects" / (project + ".yml")).read_text()
        keys = [line.split(":")[0].strip() for line in text.splitlines() if line.strip() and ":" in line]
        assert set(keys) <= {"_BASE_", "MODEL", "LOSSES", "EWTH", "VARIANT", "NORM_FEAT", "MEAN_NEG_MARGIN",
                             "EW_MARGIN", "OUTPUT_DIR"}, (project, keys)


def test_duke_by_override():
    cfg = load("AGW_HNEWTH")
    cfg.merge_from_list(["DATASETS.NAMES", '("DukeMTMC",)', "DATASETS.TESTS", '("DukeMTMC",)'])
    assert cfg.DATASETS.NAMES == ("DukeMTMC",) and cfg.DATASETS.TESTS == ("DukeMTMC",)


@pytest.fixture(scope="module")
def synth_batch(datasets_root):
    return synth_train_batch(load("BoT_TH"))


# a ResNet-50 step each: on the oldest versions (make test-oldest leaves out heavy) one config per architecture
# runs, the variants differing only in loss options that tests/test_losses.py covers there
@pytest.mark.parametrize("project", [p if p in ("BoT_HNEWTH", "AGW_HNEWTH") else pytest.param(p, marks=pytest.mark.heavy)
                                     for p in PROJECTS])
def test_project_builds_and_takes_a_training_step(project, synth_batch):
    batch, num_classes = synth_batch
    cfg = load(project)
    cfg.merge_from_list(["MODEL.BACKBONE.PRETRAIN", False, "MODEL.DEVICE", "cpu",
                         "MODEL.HEADS.NUM_CLASSES", num_classes])
    torch.manual_seed(0)
    model = EWTHTrainer.build_model(cfg)
    optimizer, _ = EWTHTrainer.build_optimizer(cfg, model)
    model.train()
    data = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    with EventStorage(0):
        losses = model(data)
    names = {"loss_cls"} | TERMS[project.split("_", 1)[1]] | ({"loss_center"} if project.startswith("AGW") else set())
    assert set(losses) == names
    assert all(torch.isfinite(v) for v in losses.values())
    w0 = model.backbone.conv1.weight.detach().clone()
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    assert not torch.equal(w0, model.backbone.conv1.weight)
    # the centers are not in the model's optimizer: they have their own (EWTHTrainer)
    if project.startswith("AGW"):
        centers = model.loss_modules["CenterLoss"].centers
        assert all(centers is not p for g in optimizer.param_groups for p in g["params"])
        assert centers.grad is not None and torch.isfinite(centers.grad).all()
