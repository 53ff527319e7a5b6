"""Each compat patch: the breakage exists without it (where the stack has it) and is gone with it."""
import collections
import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch

import fastreid_ewth
from fastreid_ewth import compat

from conftest import stock_baseline_cfg


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_every_patch_is_applied_and_named():
    applied = compat.describe()
    for name in ("cpu_data_loader", "optimizer_zero_grad", "evaluator_compile",
                 "checkpoint_weights_only", "pretrained_download", "ddp_on_cpu"):
        assert name in applied and applied[name]
    if int(torch.__version__.split(".")[0]) >= 2:
        assert "torch_six" in applied
    if sys.version_info >= (3, 10):
        assert "collections_abc" in applied


@pytest.mark.skipif(sys.version_info < (3, 10), reason="collections.Mapping exists before Python 3.10")
def test_fastreid_engine_does_not_import_without_the_plugin():
    res = _run("import fastreid.engine")
    assert res.returncode != 0
    assert "Mapping" in res.stderr or "torch._six" in res.stderr


def test_fastreid_imports_with_the_plugin():
    res = _run("import fastreid_ewth, fastreid.engine, fastreid.evaluation, fastreid.data; print('ok')")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")


def test_torch_six_and_collections_used_by_the_collator():
    from torch._six import string_classes
    from fastreid.data.build import fast_batch_collator

    assert isinstance("a", string_classes)
    assert collections.Mapping is collections.abc.Mapping
    batch = [{"images": torch.full((2,), float(i)), "targets": i, "img_paths": "p%d" % i} for i in range(3)]
    out = fast_batch_collator(batch)  # walks Mapping and string_classes branches
    assert out["images"].tolist() == [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]
    assert out["targets"].tolist() == [0, 1, 2]
    assert out["img_paths"] == ["p0", "p1", "p2"]


def test_python_rank_path_runs_on_this_numpy():
    # eval_market1501 uses np.bool; compare its AP with a hand-worked case
    from fastreid.evaluation.rank import eval_market1501

    distmat = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    q_pids, g_pids = np.array([1]), np.array([2, 1, 3, 1])
    q_cams, g_cams = np.array([0]), np.array([1, 1, 1, 1])
    cmc, all_ap, all_inp = eval_market1501(distmat, q_pids, g_pids, q_cams, g_cams, 4)
    assert all_ap[0] == pytest.approx((1 / 2 + 2 / 4) / 2)  # hits at ranks 2 and 4
    assert all_inp[0] == pytest.approx(2 / 4)
    assert cmc.tolist() == [0, 1, 1, 1]


def test_train_loader_works_without_cuda(monkeypatch, tmp_path, datasets_root):
    from fastreid.data import build_reid_train_loader

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # the original DataLoaderX would need a CUDA stream here
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no CUDA")))
    loader = build_reid_train_loader(stock_baseline_cfg(tmp_path))
    batch = next(iter(loader))
    assert batch["images"].shape == (32, 3, 64, 32)
    assert batch["images"].device.type == "cpu"
    # identity sampler: 8 identities x 4 instances
    counts = collections.Counter(batch["targets"].tolist())
    assert len(counts) == 8 and set(counts.values()) == {4}


def _train_steps(trainer, steps):
    """Run ``steps`` steps of fastreid's trainer on one fixed batch; return the losses."""
    from fastreid.utils.events import EventStorage

    batch = next(iter(trainer.data_loader))
    trainer._trainer._data_loader_iter = itertools.repeat(batch)
    losses = []
    with EventStorage(0) as storage:
        for i in range(steps):
            storage.iter = i
            trainer._trainer.iter = i
            trainer._trainer.run_step()
            losses.append(storage.history("total_loss").latest())
    return losses


def test_fastreid_default_trainer_learns(tmp_path, datasets_root):
    """fastreid's own DefaultTrainer: weights change and the loss falls (torch >= 2 needs the patch)."""
    from fastreid.engine import DefaultTrainer

    trainer = DefaultTrainer(stock_baseline_cfg(tmp_path))
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    losses = _train_steps(trainer, 8)
    after = trainer.model.state_dict()
    changed = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert "backbone.conv1.weight" in changed
    assert "heads.weight" in changed  # the classifier
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.skipif(int(torch.__version__.split(".")[0]) < 2, reason="zero_grad keeps buffers before torch 2")
def test_unpatched_optimizer_never_updates_weights(tmp_path, datasets_root):
    """The breakage the optimizer patch fixes: fastreid's own build_optimizer on torch >= 2."""
    from fastreid.modeling import build_model
    from fastreid.solver import build as solver_build
    from fastreid.utils.events import EventStorage

    cfg = stock_baseline_cfg(tmp_path)
    cfg.MODEL.HEADS.NUM_CLASSES = 10
    for build, expect_change in ((solver_build._ewth_original_build_optimizer, False),
                                 (solver_build.build_optimizer, True)):
        torch.manual_seed(0)
        model = build_model(cfg)
        optimizer, _ = build(cfg, model)
        w0 = model.backbone.conv1.weight.detach().clone()
        data = {"images": torch.rand(8, 3, 64, 32) * 255, "targets": torch.arange(8) % 4}
        with EventStorage(0):
            for _ in range(3):
                loss = sum(model(data).values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        assert (not torch.equal(w0, model.backbone.conv1.weight)) == expect_change


def test_evaluator_never_compiles(monkeypatch, tmp_path):
    from fastreid.evaluation import ReidEvaluator
    from fastreid.evaluation import rank_cylib

    def forbidden(*args, **kwargs):
        raise AssertionError("tried to compile: %r" % (args,))

    monkeypatch.setattr(subprocess, "run", forbidden)
    monkeypatch.setattr(rank_cylib, "compile_helper", forbidden)
    ReidEvaluator(stock_baseline_cfg(tmp_path), num_query=1)


def test_checkpoint_with_scheduler_round_trips(tmp_path):
    from fastreid.solver import build_lr_scheduler, build_optimizer
    from fastreid.modeling import build_model
    from fastreid.utils.checkpoint import Checkpointer

    cfg = stock_baseline_cfg(tmp_path)
    cfg.MODEL.HEADS.NUM_CLASSES = 10
    model = build_model(cfg)
    optimizer, _ = build_optimizer(cfg, model)
    schedulers = build_lr_scheduler(cfg, optimizer, 10)
    Checkpointer(model, str(tmp_path), optimizer=optimizer, **schedulers).save("ckpt", epoch=3)
    model2 = build_model(cfg)
    loaded = Checkpointer(model2, str(tmp_path)).load(str(tmp_path / "ckpt.pth"))
    assert loaded["epoch"] == 3
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k


def test_imagenet_weights_offline_fail_fast_with_instructions(monkeypatch, tmp_path):
    from fastreid.modeling.backbones import resnet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # a closed local port: the download fails at once, as it does on a machine without internet
    monkeypatch.setattr(compat.patches, "PRETRAIN_TIMEOUT_S", 5)
    monkeypatch.setitem(resnet.model_urls, "18x", "http://127.0.0.1:9/resnet18-test.pth")
    cfg = stock_baseline_cfg(tmp_path, **{"MODEL.BACKBONE.PRETRAIN": True})
    with pytest.raises(RuntimeError, match="MODEL.BACKBONE.PRETRAIN_PATH"):
        resnet.build_resnet_backbone(cfg)
    assert list((tmp_path / "hub" / "checkpoints").iterdir()) == []  # no partial file left


def test_imagenet_weights_from_cache(monkeypatch, tmp_path):
    from fastreid.modeling.backbones import resnet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setitem(resnet.model_urls, "18x", "http://127.0.0.1:9/resnet18-test.pth")
    cfg = stock_baseline_cfg(tmp_path, **{"MODEL.BACKBONE.PRETRAIN": True})
    torch.manual_seed(1)
    reference = resnet.build_resnet_backbone(stock_baseline_cfg(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-test.pth")
    loaded = resnet.build_resnet_backbone(cfg)
    assert torch.equal(loaded.conv1.weight, reference.conv1.weight)


def test_corrupt_image_error_names_the_file(tmp_path):
    from PIL import Image
    from fastreid.data.common import CommDataset

    good = tmp_path / "0001_c1s1_000001_00.jpg"
    Image.new("RGB", (32, 64), (200, 10, 10)).save(good)
    bad = tmp_path / "0002_c1s1_000001_00.jpg"
    bad.write_bytes(good.read_bytes()[:200])
    dataset = CommDataset([(str(good), 1, 0), (str(bad), 2, 0)], transform=None, relabel=False)
    assert dataset[0]["images"].size == (32, 64)
    with pytest.raises(OSError, match="cannot read image .*0002_c1s1_000001_00.jpg"):
        dataset[1]


def test_distributed_data_parallel_on_cpu_with_fastreids_device_ids():
    import socket

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from fastreid.engine import defaults

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{}".format(port), world_size=1, rank=0)
    try:
        # what DefaultTrainer does with several processes: device_ids=[local rank], even for a CPU model
        with pytest.raises(ValueError, match="device_ids"):
            defaults._ewth_original_DistributedDataParallel(torch.nn.Linear(3, 2), device_ids=[0],
                                                            broadcast_buffers=False)
        model = defaults.DistributedDataParallel(torch.nn.Linear(3, 2), device_ids=[0], broadcast_buffers=False)
        assert isinstance(model, DistributedDataParallel) and model.device_ids is None
        before = model.module.weight.detach().clone()
        loss = model(torch.ones(4, 3)).sum()
        loss.backward()  # gradients go through DDP's (gloo) reducer
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        assert torch.allclose(model.module.weight, before - 0.1 * 4)
    finally:
        dist.destroy_process_group()


def test_flip_test_feature_is_the_mean_of_the_image_and_its_mirror(tmp_path):
    # Relies on: fastreid's inference_on_dataset flips inputs["images"] after the first forward pass and
    # Baseline.preprocess_image normalising that same tensor (in place before the patch)
    from fastreid.evaluation.evaluator import DatasetEvaluator, inference_on_dataset
    from fastreid.modeling.meta_arch import build_model

    assert "preprocess_in_place" in compat.describe()
    cfg = stock_baseline_cfg(str(tmp_path))
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    model = build_model(cfg).eval()
    images = torch.rand(3, 3, 64, 32, generator=torch.Generator().manual_seed(0)) * 255

    class Keep(DatasetEvaluator):
        def reset(self):
            self.outputs = []

        def process(self, inputs, outputs):
            self.outputs.append(outputs)

        def evaluate(self):
            return {}

    class Loader(list):
        dataset = [None] * 3

    keep = Keep()
    inference_on_dataset(model, Loader([{"images": images.clone()}]), keep, flip_test=True)
    with torch.no_grad():
        plain = model(images.clone())
        mirror = model(images.flip(dims=[3]))
        assert torch.equal(model({"images": images.clone()}), plain)  # dict and tensor inputs alike
    # each pass sees the image normalised once: the mean of the two features, not of a twice-normalised mirror
    torch.testing.assert_close(keep.outputs[0], (plain + mirror) / 2, rtol=0, atol=1e-6)
    x = images.clone()
    with torch.no_grad():
        model(x)
    assert torch.equal(x, images)  # the caller's batch is left as it was
