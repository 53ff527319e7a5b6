"""The loss registry and the loss zoo: every entry's plumbing, the zoo configs, registering a loss from outside."""
import glob
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from fastreid.config import get_cfg
from fastreid.layers import any_softmax
from fastreid.modeling.losses import (cross_entropy_loss, focal_loss, pairwise_circleloss, pairwise_cosface,
                                      triplet_loss)
from fastreid.utils.checkpoint import Checkpointer
from fastreid.utils.events import EventStorage
from fastreid.utils.registry import Registry

import fastreid_ewth
from fastreid_ewth import LOSS_REGISTRY, add_ewth_config
from fastreid_ewth.engine import EWTHTrainer
from fastreid_ewth.losses import ewth_loss
from fastreid_ewth.modeling.registry import INPUTS, registered_losses

from conftest import REPO, synth_train_batch

ENTRIES = registered_losses()
ZOO = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(str(REPO / "projects" / "zoo" / "*.yml")))

# the losses of both tables, as named in MODEL.LOSSES.NAME
ZOO_LOSSES = ("CrossEntropyLoss", "TripletLoss", "CenterLoss", "NPairsLoss", "HistogramLoss", "FocalLoss",
              "MultiSimilarityLoss", "SphereFaceLoss", "CosFaceLoss", "ArcFaceLoss", "ContrastiveLoss", "Cosface",
              "CircleLoss", "EWTHLoss")

N_CLASSES, P, K = 6, 4, 4
SCALE = 0.37


def cfg_with(names, base="projects/BoT_HNEWTH.yml", **overrides):
    cfg = add_ewth_config(get_cfg())
    cfg.merge_from_file(str(REPO / base))
    cfg.merge_from_list(["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", 512, "MODEL.BACKBONE.PRETRAIN",
                         False, "MODEL.DEVICE", "cpu", "MODEL.HEADS.NUM_CLASSES", N_CLASSES,
                         "MODEL.LOSSES.NAME", tuple(names)])
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


def node(cfg, name):
    entry = LOSS_REGISTRY.get(name)
    n = cfg
    for part in entry.config_node.split("."):
        n = n[part]
    return n


def labels():
    return torch.arange(P).repeat_interleave(K)


# --------------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------------
def test_the_registry_is_fastreids_type_and_holds_every_zoo_loss():
    assert isinstance(LOSS_REGISTRY, Registry)
    assert fastreid_ewth.LOSS_REGISTRY is LOSS_REGISTRY
    assert set(ZOO_LOSSES) <= set(ENTRIES)


@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry_declares_its_inputs_node_scale_and_terms(name):
    entry = LOSS_REGISTRY.get(name)
    assert entry.reads and set(entry.reads) <= set(INPUTS)
    assert "labels" in entry.reads
    assert entry.config_node.startswith("MODEL.LOSSES.")
    assert "SCALE" in entry.defaults
    assert entry.terms and all(t.startswith("loss_") for t in entry.terms)
    cfg = add_ewth_config(get_cfg())
    n = node(cfg, name)
    for key, value in entry.defaults.items():
        assert n[key] == value, (name, key)


def test_the_config_nodes_of_different_losses_are_different():
    nodes = [LOSS_REGISTRY.get(n).config_node for n in ENTRIES]
    assert len(nodes) == len(set(nodes))
    terms = [t for n in ENTRIES if n != "EWTHLoss" for t in LOSS_REGISTRY.get(n).terms]
    assert len(terms) == len(set(terms))


def test_an_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError) as error:
        EWTHTrainer.build_model(cfg_with(("CrossEntropyLoss", "TripletLos")))
    message = str(error.value)
    assert "'TripletLos' is not a registered loss" in message
    for name in ENTRIES:
        assert name in message


@pytest.mark.parametrize("names, message", [
    ((), "MODEL.LOSSES.NAME is empty"),
    (("TripletLoss", "TripletLoss"), "lists TripletLoss twice"),
])
def test_an_empty_or_repeated_list_is_refused(names, message):
    with pytest.raises(ValueError, match=message):
        EWTHTrainer.build_model(cfg_with(names))


@pytest.mark.parametrize("name", [n for n in ZOO_LOSSES if n != "EWTHLoss"])
def test_a_bad_scale_names_its_key(name):
    key = LOSS_REGISTRY.get(name).config_node + ".SCALE"
    with pytest.raises(ValueError, match=key.replace(".", r"\.") + " is -1.0"):
        EWTHTrainer.build_model(cfg_with((name,), **{key: -1.0}))


def test_a_term_two_losses_share_is_logged_under_each_loss_name():
    model = EWTHTrainer.build_model(cfg_with(("TripletLoss", "EWTHLoss")))
    outputs = _outputs()
    with EventStorage(0):
        terms = model.losses(outputs, labels())
    assert {"loss_triplet_TripletLoss", "loss_triplet_EWTHLoss", "loss_mean_neg", "loss_ew"} == set(terms)
    expected = triplet_loss(outputs["features"], labels(), 0.3, False, False)  # fastreid's TRI defaults
    torch.testing.assert_close(terms["loss_triplet_TripletLoss"], expected)


# --------------------------------------------------------------------------------------------------------
# Plumbing of every entry: the input the recipe says, times SCALE, against the library called directly
# --------------------------------------------------------------------------------------------------------
def _outputs(dim=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    pre = torch.randn(P * K, dim, generator=g)
    after = torch.randn(P * K, dim, generator=g)
    return {
        "pre_bn_features": pre,
        "after_bn_features": after,
        "features": pre,  # what the head gives with NECK_FEAT before
        "cls_outputs": torch.randn(P * K, N_CLASSES, generator=g) * 3,
        "pred_class_logits": torch.randn(P * K, N_CLASSES, generator=g),
        "classifier_weight": torch.randn(N_CLASSES, dim, generator=g),
    }


def _classifier_reference(library_class, entry, margin):
    ref = library_class(num_classes=N_CLASSES, embedding_size=entry.weight.shape[0], margin=margin,
                        scale=entry.logit_scale)
    with torch.no_grad():
        ref.W.copy_(entry.weight)
    return ref


def _reference(name, entry, outputs, y):
    """The loss of ``name`` computed by the library itself on the input the recipe says it reads."""
    feature, after, logits = outputs["features"], outputs["after_bn_features"], outputs["cls_outputs"]
    if name == "CrossEntropyLoss":
        return cross_entropy_loss(logits, y, 0.1, 0.2)  # BoT's label smoothing
    if name == "FocalLoss":
        return focal_loss(logits, y, 0.25, 2.0)
    if name == "TripletLoss":
        return triplet_loss(feature, y, 0.3, False, False)
    if name == "CircleLoss":
        return pairwise_circleloss(feature, y, 0.25, 128)
    if name == "Cosface":
        return pairwise_cosface(feature, y, 0.25, 128)
    if name == "NPairsLoss":
        return pml_losses.NPairsLoss()(feature, y)
    if name == "HistogramLoss":
        return pml_losses.HistogramLoss(n_bins=100)(feature, y)
    if name == "MultiSimilarityLoss":
        miner = pml_miners.MultiSimilarityMiner(epsilon=0.1)
        return pml_losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)(feature, y, miner(feature, y))
    if name == "ContrastiveLoss":
        return pml_losses.ContrastiveLoss(pos_margin=0, neg_margin=1)(feature, y)
    if name == "SphereFaceLoss":
        return _classifier_reference(pml_losses.SphereFaceLoss, entry, 4)(after, y)
    if name == "CosFaceLoss":
        return _classifier_reference(pml_losses.CosFaceLoss, entry, 0.35)(after, y)
    if name == "ArcFaceLoss":
        return _classifier_reference(pml_losses.ArcFaceLoss, entry, math.degrees(0.5))(after, y)
    if name == "CenterLoss":
        centers = entry.centers
        return sum(((feature[i] - centers[y[i]]) ** 2).sum() for i in range(len(y))) / len(y)
    raise KeyError(name)


@pytest.mark.parametrize("name", [n for n in ZOO_LOSSES if n != "EWTHLoss"])
def test_each_loss_reads_the_recipes_input_and_applies_its_scale(name):
    cfg = cfg_with((name,), **{LOSS_REGISTRY.get(name).config_node + ".SCALE": SCALE})
    model = EWTHTrainer.build_model(cfg)
    outputs, y = _outputs(), labels()
    with EventStorage(0):
        terms = model.losses(outputs, y)
    (term,) = LOSS_REGISTRY.get(name).terms
    assert list(terms) == [term]
    expected = _reference(name, model.loss_modules[name], outputs, y) * SCALE
    torch.testing.assert_close(terms[term], expected, rtol=1e-5, atol=1e-6)


def test_ewth_reads_the_metric_feature_and_the_classifier_weight():
    cfg = cfg_with(("EWTHLoss",), **{"MODEL.LOSSES.EWTH.SCALE": SCALE})
    model = EWTHTrainer.build_model(cfg)
    outputs, y = _outputs(), labels()
    with EventStorage(0):
        terms = model.losses(outputs, y)
    expected = ewth_loss(outputs["pre_bn_features"], y, outputs["classifier_weight"], variant="HNEWTH", scale=SCALE)
    assert terms.keys() == expected.keys()
    for key in terms:
        torch.testing.assert_close(terms[key], expected[key])


@pytest.mark.parametrize("name", ["TripletLoss", "ContrastiveLoss", "CenterLoss", "EWTHLoss"])
def test_neck_feat_changes_the_feature_the_metric_losses_see(name, monkeypatch):
    entry = LOSS_REGISTRY.get(name)
    seen = []
    forward = entry.training_terms

    def spy(self, *inputs):
        seen.append(inputs[0])
        return forward(self, *inputs)

    monkeypatch.setattr(entry, "training_terms", spy)
    images = {"images": torch.rand(P * K, 3, 64, 32) * 255, "targets": labels()}
    for neck_feat, key in (("before", "pre_bn_features"), ("after", "after_bn_features")):
        torch.manual_seed(0)
        model = EWTHTrainer.build_model(cfg_with(("CrossEntropyLoss", name), **{"MODEL.HEADS.NECK_FEAT": neck_feat}))
        model.train()
        with EventStorage(0):
            model({k: v.clone() for k, v in images.items()})
            expected = model.heads(model.backbone(model.preprocess_image(images["images"].clone())), labels())[key]
        torch.testing.assert_close(seen[-1], expected)
    assert not torch.allclose(seen[0], seen[1])


# the classifier losses of pytorch-metric-learning against fastreid's margin layers with the same weights:
# the same loss, so the units (ArcFace: radians here, degrees in the library) are right
@pytest.mark.parametrize("name, cls_layer, margin", [("ArcFaceLoss", "ArcSoftmax", 0.5),
                                                     ("CosFaceLoss", "CosSoftmax", 0.35)])
def test_library_margin_losses_equal_fastreids_margin_softmax(name, cls_layer, margin):
    cfg = cfg_with((name,), **{LOSS_REGISTRY.get(name).config_node + ".MARGIN": margin})
    entry = EWTHTrainer.build_model(cfg).loss_modules[name]
    x, y = _outputs()["after_bn_features"], labels()
    cosine = F.linear(F.normalize(x), F.normalize(entry.weight.t()))
    logits = getattr(any_softmax, cls_layer)(N_CLASSES, 64.0, margin)(cosine.clone(), y)
    expected = F.cross_entropy(logits, y)
    torch.testing.assert_close(entry(x, y)[entry.terms[0]], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["SphereFaceLoss", "CosFaceLoss", "ArcFaceLoss", "CenterLoss"])
def test_learnable_weights_are_in_the_model_its_optimizer_and_its_checkpoint(name, tmp_path):
    torch.manual_seed(0)
    cfg = cfg_with(("CrossEntropyLoss", name))
    model = EWTHTrainer.build_model(cfg)
    entry = model.loss_modules[name]
    (weight,) = list(entry.parameters())
    assert any(weight is p for p in model.parameters())
    optimizer, wrapper = EWTHTrainer.build_optimizer(cfg, model)
    model.train()
    before = weight.detach().clone()
    with EventStorage(0):
        losses = model({"images": torch.rand(P * K, 3, 64, 32) * 255, "targets": labels()})
    optimizer.zero_grad()
    sum(losses.values()).backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    optimizer.step()
    # the centres have their own SGD (EWTHTrainer); the classifiers' weights are the model optimizer's
    assert torch.equal(weight, before) == (name == "CenterLoss")
    Checkpointer(model, str(tmp_path)).save("ckpt")
    torch.manual_seed(1)
    fresh = EWTHTrainer.build_model(cfg)
    assert not torch.equal(list(fresh.loss_modules[name].parameters())[0], weight)
    Checkpointer(fresh).load(str(tmp_path / "ckpt.pth"))
    assert torch.equal(list(fresh.loss_modules[name].parameters())[0], weight)


@pytest.mark.parametrize("name", [n for n in ZOO_LOSSES])
def test_each_loss_stays_finite_under_autocast_and_keeps_fastreids_contiguous_parameters(name):
    torch.manual_seed(0)
    names = (name,) if name == "CrossEntropyLoss" else ("CrossEntropyLoss", name)
    cfg = cfg_with(names)
    model = EWTHTrainer.build_model(cfg)
    optimizer, wrapper = EWTHTrainer.build_optimizer(cfg, model)  # fastreid's ContiguousParams
    dtypes = {k: p.dtype for k, p in model.named_parameters()}
    model.train()
    # 4 identities × 2 images at 32×16: bfloat16 on a CPU without native support is emulated, and slow
    with EventStorage(0), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model({"images": torch.rand(8, 3, 32, 16) * 255, "targets": torch.arange(4).repeat_interleave(2)})
    assert set(LOSS_REGISTRY.get(name).terms) & set(losses)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    wrapper.assert_buffer_is_valid()  # raises when a loss moved a parameter out of the contiguous buffer
    assert {k: p.dtype for k, p in model.named_parameters()} == dtypes


def test_a_classifier_no_loss_reads_is_frozen_so_every_trained_parameter_gets_a_gradient():
    cfg = cfg_with(("ArcFaceLoss", "TripletLoss"))
    model = EWTHTrainer.build_model(cfg)
    assert not model.heads.weight.requires_grad
    optimizer, _ = EWTHTrainer.build_optimizer(cfg, model)
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    model.train()
    with EventStorage(0) as storage:
        losses = model({"images": torch.rand(P * K, 3, 64, 32) * 255, "targets": labels()})
        assert "cls_accuracy" not in storage.latest()  # the untrained classifier's accuracy means nothing
    sum(losses.values()).backward()
    missing = [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing  # what DDP without find_unused_parameters needs
    assert EWTHTrainer.build_model(cfg_with(("CrossEntropyLoss",))).heads.weight.requires_grad


# --------------------------------------------------------------------------------------------------------
# The zoo configs
# --------------------------------------------------------------------------------------------------------
ZOO_TERMS = {
    "Plain_Softmax": {"loss_cls"}, "Plain_Triplet": {"loss_triplet"},
    "Plain_SoftmaxTriplet": {"loss_cls", "loss_triplet"}, "Plain_CenterSoftmax": {"loss_cls", "loss_center"},
    "Plain_NPair": {"loss_npairs"}, "Plain_Histogram": {"loss_histogram"}, "Plain_Focal": {"loss_focal"},
    "Plain_MultiSimilarity": {"loss_ms"}, "Plain_SphereFace": {"loss_sphereface"},
    "Plain_SphereFaceM4": {"loss_sphereface"}, "Plain_CosFace": {"loss_cosface_cls"},
    "Plain_ArcFace": {"loss_arcface"},
    "BoT_CE_Triplet": {"loss_cls", "loss_triplet"}, "BoT_CE_Contrastive": {"loss_cls", "loss_contrastive"},
    "BoT_CE_Cosface": {"loss_cls", "loss_cosface"}, "BoT_CELS_Triplet": {"loss_cls", "loss_triplet"},
    "BoT_CELS_Contrastive": {"loss_cls", "loss_contrastive"}, "BoT_CELS_Cosface": {"loss_cls", "loss_cosface"},
    "BoT_CosFace_Triplet": {"loss_cls", "loss_triplet"}, "BoT_CosFace_Cosface": {"loss_cls", "loss_cosface"},
    "BoT_ArcFace_Triplet": {"loss_cls", "loss_triplet"}, "BoT_Circle_Circle": {"loss_cls", "loss_circle"},
}


def test_there_is_one_zoo_config_per_published_row():
    assert sorted(ZOO_TERMS) == ZOO


def load_zoo(name):
    cfg = add_ewth_config(get_cfg())
    cfg.merge_from_file(str(REPO / "projects" / "zoo" / (name + ".yml")))
    return cfg


def test_the_plain_recipe_has_no_tricks():
    cfg = load_zoo("Plain_Softmax")
    assert cfg.MODEL.BACKBONE.LAST_STRIDE == 2 and cfg.MODEL.BACKBONE.PRETRAIN
    assert not cfg.MODEL.HEADS.WITH_BNNECK
    assert cfg.MODEL.LOSSES.CE.EPSILON == 0
    assert cfg.SOLVER.WARMUP_EPOCHS == 0 and cfg.SOLVER.WARMUP_ITERS == 0
    assert cfg.INPUT.FLIP.ENABLED and not cfg.TEST.FLIP.ENABLED
    for aug in ("PADDING", "REA", "CJ", "AUTOAUG", "AUGMIX", "AFFINE", "RPT"):
        assert not cfg.INPUT[aug].ENABLED, aug
    # torchreid's default optimiser and schedule
    assert (cfg.SOLVER.OPT, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY) == ("Adam", 3e-4, 5e-4)
    assert (cfg.SOLVER.MAX_EPOCH, list(cfg.SOLVER.STEPS), cfg.SOLVER.GAMMA) == (60, [20], 0.1)


@pytest.mark.parametrize("name", [n for n in ZOO if n.startswith("BoT_")])
def test_the_second_tables_rows_build_on_bot(name):
    bot = add_ewth_config(get_cfg())
    bot.merge_from_file(str(REPO / "configs" / "Base-BoT.yml"))
    cfg = load_zoo(name)
    for key in ("MODEL.BACKBONE.LAST_STRIDE", "MODEL.HEADS.WITH_BNNECK", "MODEL.HEADS.NECK_FEAT", "SOLVER.MAX_EPOCH",
                "SOLVER.WARMUP_EPOCHS", "INPUT.REA.ENABLED"):
        a, b = cfg, bot
        for part in key.split("."):
            a, b = a[part], b[part]
        assert a == b, key
    assert cfg.MODEL.HEADS.NECK_FEAT == "before"
    assert cfg.MODEL.LOSSES.CE.EPSILON == (0.1 if "_CELS_" in name else 0.0)


@pytest.fixture(scope="module")
def synth_batch(datasets_root):
    return synth_train_batch(load_zoo("BoT_CE_Triplet"))


@pytest.mark.parametrize("name", ZOO)
def test_zoo_config_builds_and_takes_a_training_step(name, synth_batch):
    batch, num_classes = synth_batch
    cfg = load_zoo(name)
    cfg.merge_from_list(["MODEL.BACKBONE.PRETRAIN", False, "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM",
                         512, "MODEL.DEVICE", "cpu", "MODEL.HEADS.NUM_CLASSES", num_classes])
    torch.manual_seed(0)
    model = EWTHTrainer.build_model(cfg)
    optimizer, _ = EWTHTrainer.build_optimizer(cfg, model)
    model.train()
    with EventStorage(0):
        losses = model({k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()})
    assert set(losses) == ZOO_TERMS[name]
    assert all(torch.isfinite(v) for v in losses.values())
    w0 = model.backbone.conv1.weight.detach().clone()
    optimizer.zero_grad()
    sum(losses.values()).backward()
    assert not [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None]
    optimizer.step()
    assert not torch.equal(w0, model.backbone.conv1.weight)


# --------------------------------------------------------------------------------------------------------
# A loss of another project, registered outside the repository, trained by name from YAML
# --------------------------------------------------------------------------------------------------------
EXTERNAL = textwrap.dedent('''
    import sys

    import torch
    import fastreid_ewth
    from fastreid_ewth import LOSS_REGISTRY, ReidLoss
    from fastreid_ewth.train import run


    @LOSS_REGISTRY.register()
    class SpreadLoss(ReidLoss):
        """Pulls each feature towards the mean feature of its identity, pushes the identity means apart."""
        reads = ("feature", "labels")
        config_node = "MODEL.LOSSES.SPREAD"
        defaults = {"SCALE": 1.0, "MARGIN": 1.0}
        terms = ("loss_spread",)
        identity_batches = True

        def __init__(self, scale=1.0, margin=1.0):
            super().__init__(scale)
            self.margin = margin

        def compute(self, feature, labels):
            feature = torch.nn.functional.normalize(feature)
            ids, inverse = labels.unique(return_inverse=True)
            means = torch.zeros(len(ids), feature.shape[1]).index_add_(0, inverse, feature)
            means = means / torch.bincount(inverse).unsqueeze(1)
            pull = (feature - means[inverse]).pow(2).sum(1).mean()
            gaps = torch.cdist(means, means) + torch.eye(len(ids)) * 1e3
            return pull + torch.relu(self.margin - gaps).mean()


    if __name__ == "__main__":
        sys.exit(run(sys.argv[1:]))
''')


@pytest.mark.heavy
def test_a_loss_registered_outside_the_repository_trains_by_name(tmp_path, small_root):
    (tmp_path / "my_project.py").write_text(EXTERNAL)
    (tmp_path / "my_loss.yml").write_text(textwrap.dedent('''
        _BASE_: {}
        MODEL:
          LOSSES:
            NAME: ("SpreadLoss",)
            SPREAD:
              MARGIN: 0.8
              SCALE: 2.0
    '''.format(REPO / "projects" / "Demo.yml")))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH="", FASTREID_DATASETS=str(small_root))  # 16 identities of SynthReID
    res = subprocess.run(
        [sys.executable, "my_project.py", "--config-file", "my_loss.yml", "SOLVER.MAX_EPOCH", "1", "SOLVER.STEPS",
         "[1]", "SOLVER.WARMUP_EPOCHS", "0", "SOLVER.IMS_PER_BATCH", "16", "TEST.EVAL_PERIOD", "1",
         "SOLVER.CHECKPOINT_PERIOD", "1", "OUTPUT_DIR", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    spread = [r["loss_spread"] for r in records if "loss_spread" in r]
    assert spread, records[:2]  # its one term, logged under its own name
    assert all(math.isfinite(v) and v >= 0 for v in spread)
    assert "mAP" in (out / "log.txt").read_text()  # evaluated (fastreid's last evaluation is not in metrics.json)
    config = (out / "config.yaml").read_text()
    assert "SPREAD" in config and "MARGIN: 0.8" in config


def test_the_registry_checks_only_ewthbaselines_names():
    from fastreid_ewth.engine.setup import _check_losses

    cfg = cfg_with(("CrossEntropyLoss", "SomeOtherProjectsLoss"))
    with pytest.raises(ValueError, match="'SomeOtherProjectsLoss' is not a registered loss"):
        _check_losses(cfg)
    cfg.MODEL.META_ARCHITECTURE = "SomeOtherProjectsArch"  # its own meta-architecture checks its own names
    _check_losses(cfg)
