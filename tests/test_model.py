"""EWTHEmbeddingHead, center-loss optimizer, epoch schedule and sampler check."""
import pytest
import torch

from fastreid.config import get_cfg
from fastreid.engine import hooks as fastreid_hooks

from fastreid_ewth import add_ewth_config
from fastreid_ewth.engine import EWTHTrainer
from fastreid_ewth.engine.hooks import CenterLossOptimizer
from fastreid_ewth.engine.sampler_check import check_identity_sampler
from fastreid_ewth.modeling import CenterLoss, EWTHEmbeddingHead

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


def test_head_requires_bnneck():
    with pytest.raises(ValueError, match="WITH_BNNECK"):
        EWTHEmbeddingHead(project_cfg(**{"MODEL.HEADS.WITH_BNNECK": False}))


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
    center(f, y).backward()
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
        trainer.model.center_loss.centers.add_(1.0)
    trainer.center_optimizer.param_groups[0]["lr"] = 0.123  # a state the fresh trainer does not have
    trainer.checkpointer.save("model_0000", epoch=0)

    resumed = EWTHTrainer(project_cfg("AGW_HNEWTH", **overrides))
    assert resumed.center_optimizer.param_groups[0]["lr"] == 0.5
    resumed.resume_or_load(resume=True)
    assert resumed.start_epoch == 1
    assert resumed.center_optimizer.param_groups[0]["lr"] == 0.123
    assert torch.equal(resumed.model.center_loss.centers, trainer.model.center_loss.centers)


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
