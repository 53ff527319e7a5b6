"""EWTHEmbeddingHead, center-loss optimizer, epoch schedule and sampler check."""
import pytest
import torch

from fastreid.config import get_cfg
from fastreid.engine import hooks as fastreid_hooks

from fastreid_ewth import add_ewth_config
from fastreid_ewth.engine import EWTHTrainer
from fastreid_ewth.engine.setup import check_identity_sampler
from fastreid_ewth.modeling import CenterLoss, EWTHEmbeddingHead
from fastreid_ewth.modeling.center_loss import CenterLossOptimizer

from conftest import REPO


def project_cfg(name="BoT_HNEWTH", **overrides):
    cfg = add_ewth_config(get_cfg())
    cfg.merge_from_file(str(REPO / "projects" / (name + ".yml")))
    cfg.merge_from_list(["MODEL.BACKBONE.PRETRAIN", False, "MODEL.DEVICE", "cpu", "MODEL.HEADS.NUM_CLASSES", 5])
    for k, v in overrides.items():
        cfg.merge_from_list([k, v])
    return cfg


@pytest.mark.parametrize("pool", ["GlobalAvgPool", "GeneralizedMeanPoolingP"])
def test_head_outputs(pool):
    cfg = project_cfg(**{"MODEL.BACKBONE.FEAT_DIM": 16, "MODEL.HEADS.POOL_LAYER": pool})
    head = EWTHEmbeddingHead(cfg)
    torch.manual_seed(0)
    fmap = torch.rand(6, 16, 4, 2)
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    head.train()
    out = head(fmap, targets)
    pooled = head.pool_layer(fmap)[..., 0, 0]
    assert torch.allclose(out["features"], pooled)  # pre-BN feature for the metric loss
    assert out["classifier_weight"] is head.weight and head.weight.shape == (5, 16)
    bn = head.bnneck
    assert not bn.bias.requires_grad  # BNNeck bias frozen
    batch_bn = (pooled - pooled.mean(0)) / torch.sqrt(pooled.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias
    assert torch.allclose(out["pred_class_logits"], batch_bn @ head.weight.t(), atol=1e-5)  # bias-free classifier
    # a few more training batches move the running statistics, then eval uses them
    for _ in range(3):
        head(torch.rand(6, 16, 4, 2) * 2, targets)
    head.eval()
    feat = head(fmap)
    expect = (pooled - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert feat.shape == (6, 16) and torch.allclose(feat, expect, atol=1e-5)


def test_head_without_bnneck_trains_and_tests_on_the_pooled_feature():
    head = EWTHEmbeddingHead(project_cfg(**{"MODEL.HEADS.WITH_BNNECK": False, "MODEL.BACKBONE.FEAT_DIM": 16,
                                            "MODEL.HEADS.NUM_CLASSES": 3}))
    fmap = torch.rand(6, 16, 4, 2)
    pooled = fmap.mean(dim=(2, 3))
    out = head(fmap, torch.tensor([0, 0, 1, 1, 2, 2]))
    for key in ("features", "pre_bn_features", "after_bn_features"):
        assert torch.allclose(out[key], pooled, atol=1e-6), key
    assert torch.allclose(out["pred_class_logits"], pooled @ head.weight.t(), atol=1e-6)
    head.eval()
    assert torch.allclose(head(fmap), pooled, atol=1e-6)


@pytest.mark.parametrize("neck_feat, key", [("before", "pre_bn_features"), ("after", "after_bn_features")])
def test_neck_feat_picks_the_metric_feature(neck_feat, key):
    head = EWTHEmbeddingHead(project_cfg(**{"MODEL.HEADS.NECK_FEAT": neck_feat, "MODEL.BACKBONE.FEAT_DIM": 16,
                                            "MODEL.HEADS.NUM_CLASSES": 3}))
    out = head(torch.rand(6, 16, 4, 2) * 3, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert out["features"] is out[key]
    assert not torch.allclose(out["pre_bn_features"], out["after_bn_features"])  # the BNNeck changes it


def test_unknown_neck_feat_is_refused():
    with pytest.raises(ValueError, match="MODEL.HEADS.NECK_FEAT 'middle' is unknown"):
        EWTHEmbeddingHead(project_cfg(**{"MODEL.HEADS.NECK_FEAT": "middle"}))


def test_unknown_loss_name_is_refused():
    with pytest.raises(ValueError, match="TripletLos"):
        EWTHTrainer.build_model(project_cfg(**{"MODEL.LOSSES.NAME": ("CrossEntropyLoss", "TripletLos")}))


class _FakeTrainer:
    grad_scaler = None


def test_center_optimizer_step_divides_by_the_loss_weight():
    torch.manual_seed(0)
    center = CenterLoss(3, 4, scale=0.0005)
    opt = torch.optim.SGD(center.parameters(), lr=0.5)
    hook = CenterLossOptimizer(opt, center)
    hook.trainer = _FakeTrainer()
    f = torch.randn(6, 4)
    y = torch.tensor([0, 0, 1, 1, 2, 0])
    c0 = center.centers.detach().clone()
    hook.before_step()
    center(f, y)["loss_center"].backward()
    hook.after_step()
    # d/dc_k of mean_i ||f_i - c_{y_i}||^2 is -2/N * sum_{i: y_i = k} (f_i - c_k), unweighted
    grad = torch.zeros_like(c0)
    for i in range(6):
        grad[y[i]] -= 2.0 / 6 * (f[i] - c0[y[i]])
    assert torch.allclose(center.centers.detach(), c0 - 0.5 * grad, atol=1e-6)


def test_center_optimizer_is_checkpointed_and_restored(tmp_path, datasets_root):
    overrides = {"MODEL.BACKBONE.DEPTH": "18x", "MODEL.BACKBONE.FEAT_DIM": 512, "MODEL.HEADS.NUM_CLASSES": 0,
                 "DATASETS.NAMES": ("SynthReID",), "DATASETS.TESTS": ("SynthReID",), "INPUT.SIZE_TRAIN": [64, 32],
                 "SOLVER.IMS_PER_BATCH": 16, "DATALOADER.NUM_WORKERS": 0, "OUTPUT_DIR": str(tmp_path)}
    trainer = EWTHTrainer(project_cfg("AGW_HNEWTH", **overrides))
    assert trainer.center_optimizer is not None
    assert "center_optimizer" in trainer.checkpointer.checkpointables
    with torch.no_grad():
        trainer.model.loss_modules["CenterLoss"].centers.add_(1.0)
    trainer.center_optimizer.param_groups[0]["lr"] = 0.123  # a state the fresh trainer does not have
    trainer.checkpointer.save("model_0000", epoch=0)

    resumed = EWTHTrainer(project_cfg("AGW_HNEWTH", **overrides))
    assert resumed.center_optimizer.param_groups[0]["lr"] == 0.5
    resumed.resume_or_load(resume=True)
    assert resumed.start_epoch == 1
    assert resumed.center_optimizer.param_groups[0]["lr"] == 0.123
    centers = resumed.model.loss_modules["CenterLoss"].centers
    assert torch.equal(centers, trainer.model.loss_modules["CenterLoss"].centers)


class _FakeStorage:
    def put_scalar(self, *args, **kwargs):
        pass


class _ScheduleTrainer:
    grad_scaler = None
    delay_epochs = 0
    storage = _FakeStorage()


@pytest.mark.parametrize("iters_per_epoch", [202, 37])  # Market1501-sized and a small set
def test_schedule_epochs_whatever_the_dataset_size(iters_per_epoch):
    cfg = project_cfg("BoT_TH")
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.SOLVER.BASE_LR)
    scheduler = EWTHTrainer.build_lr_scheduler(cfg, optimizer, iters_per_epoch)
    trainer = _ScheduleTrainer()
    trainer.warmup_iters = 10 * iters_per_epoch
    hook = fastreid_hooks.LRScheduler(optimizer, scheduler)
    hook.trainer = trainer
    lr_at = {}  # (epoch, iteration within epoch) -> lr used by that iteration
    trainer.iter = 0
    for epoch in range(cfg.SOLVER.MAX_EPOCH):
        trainer.epoch = epoch
        for i in range(iters_per_epoch):
            if i in (0, iters_per_epoch - 1):
                lr_at[epoch, i] = optimizer.param_groups[0]["lr"]
            hook.after_step()
            trainer.iter += 1
        hook.after_epoch()
    base, last = cfg.SOLVER.BASE_LR, iters_per_epoch - 1
    assert lr_at[0, 0] == pytest.approx(0.01 * base)
    assert lr_at[5, 0] == pytest.approx(base * (0.01 + 0.99 * 5 / 10))  # linear in iterations
    assert lr_at[9, last] < base
    assert lr_at[10, 0] == pytest.approx(base)  # full lr once the 10 warm-up epochs are over
    assert lr_at[39, last] == pytest.approx(base)
    assert lr_at[40, 0] == pytest.approx(0.1 * base)
    assert lr_at[69, last] == pytest.approx(0.1 * base)
    assert lr_at[70, 0] == pytest.approx(0.01 * base)
    assert lr_at[119, last] == pytest.approx(0.01 * base)


def test_trainer_uses_epoch_warmup(tmp_path, datasets_root):
    cfg = project_cfg("BoT_TH", **{"MODEL.BACKBONE.DEPTH": "18x", "MODEL.BACKBONE.FEAT_DIM": 512,
                                   "DATASETS.NAMES": ("SynthReID",), "SOLVER.IMS_PER_BATCH": 16,
                                   "DATALOADER.NUM_WORKERS": 0, "OUTPUT_DIR": str(tmp_path)})
    trainer = EWTHTrainer(cfg)
    assert trainer.iters_per_epoch > 0
    assert trainer.warmup_iters == 10 * trainer.iters_per_epoch


@pytest.mark.parametrize("overrides, world, message", [
    ({"DATALOADER.NUM_INSTANCE": 1}, 1, "DATALOADER.NUM_INSTANCE is 1"),
    ({"SOLVER.IMS_PER_BATCH": 62}, 1, "not a multiple of DATALOADER.NUM_INSTANCE"),
    ({"SOLVER.IMS_PER_BATCH": 16}, 4, "gives 1 identity per batch"),
    ({"DATALOADER.SAMPLER_TRAIN": "TrainingSampler"}, 1, "DATALOADER.SAMPLER_TRAIN is 'TrainingSampler'"),
    ({"SOLVER.IMS_PER_BATCH": 66}, 4, "cannot be split evenly over 4 processes"),
])
def test_sampler_check(overrides, world, message):
    with pytest.raises(ValueError, match=message):
        check_identity_sampler(project_cfg(**overrides), world)
    check_identity_sampler(project_cfg(), world)  # the recipe itself passes


# --------------------------------------------------------------------------------------------------------
# Loss options: the config's defaults and checks are the losses' own
# --------------------------------------------------------------------------------------------------------
def test_config_defaults_are_the_option_tables():
    from fastreid_ewth.losses import EWTH_DEFAULTS, EWTH_OPTIONS
    from fastreid_ewth.modeling.center_loss import CENTER_DEFAULTS

    cfg = add_ewth_config(get_cfg())
    assert dict(cfg.MODEL.LOSSES.EWTH) == {option.key: option.default for option in EWTH_OPTIONS}
    assert {o.key: cfg.MODEL.LOSSES.EWTH[o.key] for o in EWTH_OPTIONS} == \
        {o.key: EWTH_DEFAULTS[o.name] for o in EWTH_OPTIONS}
    assert dict(cfg.MODEL.LOSSES.CENTER) == dict(CENTER_DEFAULTS) == {"SCALE": 0.0005, "LR": 0.5}  # AGW's
    from fastreid_ewth.modeling import EWTHLoss

    assert EWTHLoss.from_config(cfg).options == dict(EWTH_DEFAULTS)
    assert CenterLoss(3, 4).scale == CENTER_DEFAULTS["SCALE"]


def test_base_recipes_set_only_what_they_choose():
    # the EWTH and centre defaults are not written out again in the base YAML files
    for name in ("Base-BoT.yml", "Base-AGW.yml"):
        text = (REPO / "configs" / name).read_text()
        for key in ("MARGIN:", "EW_THRESHOLD:", "NORM_FEAT:", "CENTER:"):
            assert key not in text, (name, key)
    cfg = project_cfg("AGW_HNTH")
    assert cfg.MODEL.LOSSES.EWTH.MEAN_NEG_MARGIN == 0.1 and cfg.MODEL.LOSSES.EWTH.MARGIN == 0.3


@pytest.mark.parametrize("key, value", [("EW_MARGIN", -0.2), ("EW_THRESHOLD", 1.5), ("VARIANT", "HNEWTHX"),
                                        ("NORM_FEAT", "L2"), ("SCALE", -1.0), ("MARGIN", float("nan"))])
def test_from_config_refuses_like_the_loss_function(key, value):
    from fastreid_ewth.losses import EWTH_OPTIONS, ewth_loss
    from fastreid_ewth.modeling import EWTHLoss

    cfg = project_cfg()
    cfg.MODEL.LOSSES.EWTH[key] = value
    with pytest.raises(ValueError) as from_config:
        EWTHLoss.from_config(cfg)
    name = next(o.name for o in EWTH_OPTIONS if o.key == key)
    with pytest.raises(ValueError) as from_function:
        ewth_loss(torch.randn(4, 8), torch.tensor([0, 0, 1, 1]), torch.randn(2, 8), **{name: value})
    assert str(from_config.value) == str(from_function.value)
    assert "MODEL.LOSSES.EWTH.{} is {!r}".format(key, value) in str(from_config.value)


def test_soft_margin_allows_negative_hinge_margins_in_the_config():
    from fastreid_ewth.modeling import EWTHLoss

    cfg = project_cfg(**{"MODEL.LOSSES.EWTH.MARGIN": 0.0, "MODEL.LOSSES.EWTH.EW_MARGIN": -1.0})
    assert EWTHLoss.from_config(cfg).options["ew_margin"] == -1.0


@pytest.mark.parametrize("key, value", [("SCALE", 0.0), ("SCALE", -0.0005), ("LR", -0.5), ("LR", float("inf")),
                                        ("SCALE", float("nan"))])
def test_center_options_are_checked_once_for_config_and_module(key, value):
    from fastreid_ewth.modeling.center_loss import check_center_config

    cfg = project_cfg("AGW_HNEWTH")
    check_center_config(cfg)  # the recipe passes
    cfg.MODEL.LOSSES.CENTER[key] = value
    with pytest.raises(ValueError) as from_config:
        check_center_config(cfg)
    message = str(from_config.value)
    assert "MODEL.LOSSES.CENTER.{} is {!r}".format(key, value) in message and "> 0" in message
    assert "drop CenterLoss from MODEL.LOSSES.NAME" in message
    if key == "SCALE":
        with pytest.raises(ValueError) as from_module:
            CenterLoss(3, 4, scale=value)
        assert str(from_module.value) == message


def test_center_loss_of_finds_the_centres_through_ddp():
    from torch.nn.parallel import DistributedDataParallel

    from fastreid_ewth.modeling.center_loss import center_loss_of

    model = torch.nn.Module()
    model.loss_modules = torch.nn.ModuleDict()
    assert center_loss_of(model) is None
    model.loss_modules["CenterLoss"] = CenterLoss(3, 4)
    assert center_loss_of(model) is model.loss_modules["CenterLoss"]
    wrapped = DistributedDataParallel.__new__(DistributedDataParallel)  # no process group needed for the lookup
    torch.nn.Module.__init__(wrapped)
    wrapped.module = model
    assert center_loss_of(wrapped) is model.loss_modules["CenterLoss"]
    del model.loss_modules["CenterLoss"]
    assert center_loss_of(wrapped) is None


# --------------------------------------------------------------------------------------------------------
# One distance matrix and one mining per training step
# --------------------------------------------------------------------------------------------------------
def _spy_everywhere(monkeypatch, function):
    """Replace ``function`` by a counting wrapper in every fastreid_ewth module that holds it."""
    import sys

    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("fastreid_ewth") and module is not None:
            for attr, value in list(vars(module).items()):
                if value is function:
                    monkeypatch.setattr(module, attr, spy)
    return calls


@pytest.mark.parametrize("variant", ["TH", "HNEWTH"])
def test_training_step_computes_the_distance_matrix_once(monkeypatch, variant):
    from fastreid.utils.events import EventStorage

    from fastreid_ewth.losses import distance, mining

    cfg = add_ewth_config(get_cfg())
    cfg.merge_from_file(str(REPO / "projects" / "Demo.yml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.HEADS.NUM_CLASSES", 3, "MODEL.LOSSES.EWTH.VARIANT", variant])
    torch.manual_seed(0)
    model = EWTHTrainer.build_model(cfg).train()
    matrices = _spy_everywhere(monkeypatch, distance.distance_matrix)
    pairwise = _spy_everywhere(monkeypatch, distance.pairwise_distance)
    minings = _spy_everywhere(monkeypatch, mining.hard_example_mining)
    pairs = _spy_everywhere(monkeypatch, distance.pair_distances)
    data = {"images": torch.rand(9, 3, 64, 32) * 255, "targets": torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])}
    with EventStorage(0) as storage:
        losses = model(data)
        logged = {k for k in storage.latest() if k.startswith("diag/")}
    assert logged >= {"diag/hinge_active", "diag/d_ap", "diag/d_an"}  # diagnostics were produced...
    assert (len(matrices), len(pairwise), len(minings), len(pairs)) == (1, 0, 1, 1)  # ...from the loss's own pass
    sum(losses.values()).backward()
