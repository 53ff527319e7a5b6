"""The named reaches of ``fastreid_ewth.compat`` into fastreid 1.4.0: each test fails when the fastreid
behaviour the function relies on changes, and a scan checks that no other module reaches in."""
import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from fastreid_ewth import compat
from conftest import REPO, stock_baseline_cfg

PACKAGE = REPO / "fastreid_ewth"


def _identity_items(identities=6, per_identity=4):
    return [("img_{}_{}.jpg".format(pid, i), pid, i % 2) for pid in range(identities) for i in range(per_identity)]


def test_local_process_group_is_what_fastreids_comm_reads(tmp_path):
    # one gloo process: before the group is set fastreid cannot tell its local rank, after it reads our group
    code = textwrap.dedent("""
        import fastreid_ewth, torch.distributed as dist
        from fastreid.utils import comm
        from fastreid_ewth import compat
        dist.init_process_group("gloo", init_method="file://{store}", world_size=1, rank=0)
        try:
            comm.get_local_rank()
        except AssertionError:
            print("unset: refused")
        group = dist.new_group([0])
        compat.set_local_process_group(group)
        print("local", comm.get_local_rank(), comm.get_local_size())
        dist.destroy_process_group()
    """).format(store=tmp_path / "store")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["unset: refused", "local 0 1"]


@pytest.mark.parametrize("sampler_name", ["NaiveIdentitySampler", "BalancedIdentitySampler", "TrainingSampler"])
def test_a_samplers_seed_decides_its_stream(sampler_name):
    import itertools

    from fastreid.data import samplers

    cls = getattr(samplers, sampler_name)
    items = _identity_items()

    def make(seed):
        return cls(len(items), seed=seed) if sampler_name == "TrainingSampler" else cls(items, 8, 2, seed=seed)

    def head(sampler):
        return list(itertools.islice(iter(sampler), 40))

    sampler = make(1)
    assert compat.sampler_seed(sampler) == 1
    assert compat.set_sampler_seed(sampler, 7)
    assert compat.sampler_seed(sampler) == 7
    assert head(sampler) == head(make(7)) != head(make(1))


def test_a_sampler_without_a_seed_is_left_alone():
    class Plain:
        pass

    plain = Plain()
    assert compat.sampler_seed(plain) is None
    assert compat.set_sampler_seed(plain, 3) is False and not hasattr(plain, "_seed")


_SEEN_ROOTS = []


def _probe_dataset():
    from fastreid.data.datasets import DATASET_REGISTRY
    from fastreid.data.datasets.bases import ImageDataset

    if "CompatRootProbe" not in compat.registered_datasets():
        @DATASET_REGISTRY.register()
        class CompatRootProbe(ImageDataset):
            def __init__(self, root="datasets", **kwargs):
                _SEEN_ROOTS.append(root)
                items = [(str(REPO / "missing.jpg"), 0, 0), (str(REPO / "missing.jpg"), 1, 1)]
                super().__init__(items, items, items, **kwargs)


def test_fastreid_builds_datasets_under_the_root_we_report(monkeypatch, tmp_path):
    from fastreid.config import get_cfg
    from fastreid.data import build, build_reid_test_loader

    _probe_dataset()
    monkeypatch.setattr(build, "_root", str(tmp_path))
    assert compat.datasets_root() == str(tmp_path)
    _SEEN_ROOTS.clear()
    build_reid_test_loader(get_cfg(), dataset_name="CompatRootProbe")
    assert _SEEN_ROOTS == [str(tmp_path)]


def test_registered_datasets_lists_what_the_registry_builds():
    from fastreid.data.datasets import DATASET_REGISTRY

    names = compat.registered_datasets()
    assert {"Market1501", "DukeMTMC", "MSMT17", "SynthReID"} <= set(names)
    assert names == sorted(names)
    for name in names:
        assert DATASET_REGISTRY.get(name) is not None


def test_registry_names_lists_what_a_registry_gets():
    from fastreid.utils.registry import Registry

    registry = Registry("PROBE")
    assert compat.registry_names(registry) == []

    @registry.register()
    class Zeta:
        pass

    @registry.register()
    class Alpha:
        pass

    assert compat.registry_names(registry) == ["Alpha", "Zeta"]
    assert registry.get("Alpha") is Alpha


@pytest.mark.parametrize("losses", [("CrossEntropyLoss",), ("CrossEntropyLoss", "TripletLoss")])
def test_fastreid_logs_each_loss_by_name_only_when_there_are_several(losses, tmp_path, datasets_root):
    """What ``compat.call_after_write_metrics`` relies on: ``total_loss`` always, each term only when > 1."""
    from fastreid.engine import DefaultTrainer
    from fastreid.utils.events import EventStorage

    trainer = DefaultTrainer(stock_baseline_cfg(tmp_path, **{"SOLVER.IMS_PER_BATCH": 16,
                                                              "MODEL.LOSSES.NAME": losses}))
    trainer.iter = 0
    seen = []

    def callback(loss_dict):
        seen.append((sorted(loss_dict), sorted(trainer.storage.latest())))

    assert compat.call_after_write_metrics(trainer, callback)
    assert not compat.call_after_write_metrics(type("Stand_in", (), {"_trainer": object()})(), callback)
    with EventStorage(0) as trainer.storage:
        trainer.run_step()
    ((names, logged),) = seen
    assert names == sorted({"CrossEntropyLoss": "loss_cls", "TripletLoss": "loss_triplet"}[n] for n in losses)
    assert "total_loss" in logged
    assert all((name in logged) == (len(losses) > 1) for name in names)


def test_the_checkpointer_fastreid_builds_is_replaced_on_a_stock_trainer(tmp_path, datasets_root):
    from fastreid.engine import DefaultTrainer
    from fastreid.utils.checkpoint import Checkpointer

    wrapped = []

    class Marked(Checkpointer):
        pass

    def wrap(checkpointer):
        wrapped.append(type(checkpointer))
        return Marked(checkpointer.model, checkpointer.save_dir, **checkpointer.checkpointables)

    class Probe(DefaultTrainer):
        checkpointer = compat.checkpointer_property(wrap)

    trainer = Probe(stock_baseline_cfg(tmp_path))
    assert wrapped == [Checkpointer]  # fastreid assigned its own, once, in __init__
    assert type(trainer.checkpointer) is Marked
    assert {"optimizer", "lr_sched"} <= set(trainer.checkpointer.checkpointables)


def test_the_reliability_layer_works_on_fastreids_stock_trainer(tmp_path, datasets_root):
    from fastreid.engine import DefaultTrainer
    from fastreid.utils.events import EventStorage

    from fastreid_ewth.reliability import AtomicCheckpointer, ReliableTraining
    from fastreid_ewth.reliability.resume import ResumableLoader

    class Trainer(ReliableTraining, DefaultTrainer):
        pass

    trainer = Trainer(stock_baseline_cfg(tmp_path))
    assert isinstance(trainer.checkpointer, AtomicCheckpointer)
    assert "training_state" in trainer.checkpointer.checkpointables
    assert isinstance(trainer.data_loader, ResumableLoader)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.resume_or_load(resume=False)
    trainer.iter = trainer.start_iter = 0
    trainer.epoch = 0
    with EventStorage(0) as trainer.storage:
        trainer.before_train()
        trainer.run_step()
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def _numel(optimizer):
    return sum(p.numel() for group in optimizer.param_groups for p in group["params"])


def test_hidden_parameters_stay_out_of_fastreids_optimizer():
    from fastreid.config import get_cfg
    from fastreid.solver import build_optimizer

    cfg = get_cfg()
    model = nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 2))
    extra = list(model[1].parameters())
    total = sum(p.numel() for p in model.parameters())
    # what is relied on: fastreid collects exactly the parameters that require grad
    assert _numel(build_optimizer(cfg, model)[0]) == total
    optimizer, _ = compat.build_optimizer_without(build_optimizer, cfg, model, extra)
    assert _numel(optimizer) == total - sum(p.numel() for p in extra)
    assert all(p.requires_grad for p in model.parameters())  # given back after the call


def test_the_lr_hook_reads_the_warmup_length_we_set(tmp_path, datasets_root):
    from fastreid.engine import DefaultTrainer, hooks

    trainer = DefaultTrainer(stock_baseline_cfg(tmp_path, **{"SOLVER.WARMUP_ITERS": 2}))
    compat.set_warmup_iters(trainer, 5)
    [hook] = [h for h in trainer._hooks if isinstance(h, hooks.LRScheduler)]
    steps = []
    trainer.scheduler["warmup_sched"].step = lambda: steps.append(trainer.iter)
    from fastreid.utils.events import EventStorage

    with EventStorage(0) as trainer.storage:
        for trainer.iter in range(8):
            hook.after_step()
    assert steps == [0, 1, 2, 3, 4]  # steps while iter + 1 <= 5
    with pytest.raises(RuntimeError, match="after DefaultTrainer.__init__"):
        compat.set_warmup_iters(object(), 5)


def test_jaccard_search_option_runs_here_and_fastreids_default_needs_a_gpu():
    from fastreid.utils.compute_dist import compute_jaccard_distance

    features = torch.nn.functional.normalize(torch.randn(30, 8), dim=1)
    option = compat.jaccard_search_option()
    if not torch.cuda.is_available():
        assert option == 3
        # what is relied on: fastreid's default asks faiss for a GPU search
        with pytest.raises(Exception):
            compute_jaccard_distance(features, k1=5, k2=2)
    jaccard = compute_jaccard_distance(features, k1=5, k2=2, search_option=option)
    assert jaccard.shape == (30, 30)


def test_fastreid_checkpoints_load_with_their_python_objects(tmp_path):
    from fastreid.utils.checkpoint import Checkpointer

    model = nn.Linear(3, 2)
    Checkpointer(model, str(tmp_path)).save("model_0000", epoch=4, note={"python": (1, "object")})
    loaded = compat.load_checkpoint_file(str(tmp_path / "model_0000.pth"))
    assert loaded["epoch"] == 4 and loaded["note"] == {"python": (1, "object")}
    assert torch.equal(loaded["model"]["weight"], model.weight.detach())


# names of fastreid's internals that only compat may use
_PRIVATE_FASTREID_NAMES = ("_LOCAL_PROCESS_GROUP", "_seed", "_root", "_obj_map", "_write_metrics", "_load_file",
                           "_compile_dependencies", "_data_loader_iter")


def _fastreid_names(tree):
    """Local names bound to fastreid modules or objects by the imports of a module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "fastreid":
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("fastreid."))
    return names


def test_no_module_outside_compat_reaches_into_fastreid():
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[1] == "compat":
            continue
        tree = ast.parse(path.read_text())
        fastreid = _fastreid_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastreid"):
                offences += ["{}:{} imports {}".format(rel, node.lineno, a.name) for a in node.names
                             if a.name.startswith("_")]
            if isinstance(node, ast.Attribute):
                private = node.attr.startswith("_") and not node.attr.startswith("__")
                if node.attr in _PRIVATE_FASTREID_NAMES or (
                        private and isinstance(node.value, ast.Name) and node.value.id in fastreid):
                    offences.append("{}:{} uses .{}".format(rel, node.lineno, node.attr))
                if isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name) and node.value.id in fastreid:
                    offences.append("{}:{} assigns {}.{}".format(rel, node.lineno, node.value.id, node.attr))
    assert offences == []


def test_the_scan_sees_a_reach():
    tree = ast.parse("from fastreid.utils import comm\ncomm._LOCAL_PROCESS_GROUP = None\n")
    assert _fastreid_names(tree) == {"comm"}
    attrs = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
    assert attrs and attrs[0].attr in _PRIVATE_FASTREID_NAMES and isinstance(attrs[0].ctx, ast.Store)


def _dirname_depth(node):
    """How many ``os.path.dirname`` calls wrap ``__file__`` in ``node`` (0 when it does not use ``__file__``)."""
    if isinstance(node, ast.Name) and node.id == "__file__":
        return 1e-9  # uses __file__, no dirname yet
    if isinstance(node, ast.Call):
        inner = max([_dirname_depth(a) for a in node.args] or [0])
        is_dirname = isinstance(node.func, ast.Attribute) and node.func.attr == "dirname"
        return inner + 1 if (is_dirname and inner) else inner
    return max([_dirname_depth(child) for child in ast.iter_child_nodes(node)] or [0])


def _looks_outside(tree, levels_to_package_root):
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and int(_dirname_depth(node)) > levels_to_package_root:
            found.append("line {}: more dirnames of __file__ than lead to the package".format(node.lineno))
        if isinstance(node, ast.Constant) and node.value in ("..", "tools", os.pardir):
            found.append("line {}: {!r}".format(node.lineno, node.value))
        if isinstance(node, ast.Attribute) and node.attr in ("parent", "parents") and "__file__" in ast.dump(node):
            found.append("line {}: Path(__file__).{}".format(node.lineno, node.attr))
    return found


def test_nothing_in_the_package_looks_outside_it():
    # a checkout's tools/, projects/ or configs/ are not there after `pip install .`
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO)
        levels = len(rel.parts) - 1  # dirname this many times: fastreid_ewth/
        offences += ["{} {}".format(rel, f) for f in _looks_outside(ast.parse(path.read_text()), levels)]
    assert offences == []


def test_the_outside_scan_sees_a_walk_up():
    walk = ast.parse("import os\nroot = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n")
    assert _looks_outside(walk, 1) and not _looks_outside(walk, 2)
    assert _looks_outside(ast.parse("p = os.path.join(here, '..', 'tools')\n"), 5)


def test_compat_package_exports_every_named_reach():
    from fastreid_ewth.compat import internals

    assert set(internals.__all__) <= set(compat.__all__)
    for name in internals.__all__:
        assert callable(getattr(compat, name))
        assert "Relies on:" in getattr(internals, name).__doc__
    assert pathlib.Path(internals.__file__).parent.name == "compat"


def test_trainer_hooks_are_the_hooks_fastreid_runs_in_their_order():
    from fastreid.engine.train_loop import HookBase, TrainerBase

    calls = []

    class Hook(HookBase):
        def __init__(self, name):
            self.name = name

        def before_train(self):
            calls.append(self.name)

    trainer = TrainerBase()
    hooks = [Hook("a"), Hook("b")]
    trainer.register_hooks(hooks)
    assert compat.trainer_hooks(trainer) == hooks
    trainer.before_train()
    assert calls == ["a", "b"]


def test_last_eval_results_is_what_fastreids_train_returns(monkeypatch):
    from fastreid.engine import DefaultTrainer
    from fastreid.engine.train_loop import TrainerBase

    trainer = DefaultTrainer.__new__(DefaultTrainer)  # no model, data or hooks: only train()'s return is tried
    trainer.start_epoch, trainer.max_epoch, trainer.iters_per_epoch = 0, 0, 1

    def loop(self, *args):  # stands for the loop whose EvalHook ran DefaultTrainer.test
        self._last_eval_results = {"SynthReID": {"mAP": 12.5}}

    monkeypatch.setattr(TrainerBase, "train", loop)
    assert DefaultTrainer.train(trainer) == compat.last_eval_results(trainer) == {"SynthReID": {"mAP": 12.5}}
    del trainer._last_eval_results
    with pytest.raises(AssertionError, match="No evaluation results"):
        compat.last_eval_results(trainer)


def test_closing_a_loader_iterator_stops_its_worker_processes():
    loader = torch.utils.data.DataLoader(list(range(8)), batch_size=2, num_workers=2)
    iterator = iter(loader)
    assert next(iterator).tolist() == [0, 1]
    workers = list(iterator._workers)
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    compat.close_loader_iterator(iterator)
    for w in workers:
        w.join(timeout=30)
    assert not any(w.is_alive() for w in workers)
