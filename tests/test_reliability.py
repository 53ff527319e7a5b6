"""Reliability: exact resume after SIGKILL and after a stop signal mid-epoch, atomic checkpoints, multi-process runs with gloo, non-finite loss.

End-to-end runs go through tools/train_net.py with projects/Demo.yml on a 16-identity slice of SynthReID
(symlinks into the generated set, so an epoch is 9 steps), one intra-op thread per process so that two
runs can share the 2 cores and every run computes the same way. A ``sitecustomize`` probe (written by
the ``probe`` fixture, loaded through PYTHONPATH by every process, spawned ones included) records what
each process trained on and wrote, and can poison one loss term at a given step.
"""
import io
import json
import multiprocessing
import os
import random
import signal
import socket
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from conftest import REPO, start_train_net
from fastreid_ewth.reliability.preempt import EXIT_INTERRUPTED



# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
PROBE = textwrap.dedent('''
    import json, os, signal
    if os.environ.get("EWTH_PROBE_DIR"):
        import torch
        import fastreid_ewth  # noqa: F401
        from fastreid.engine.train_loop import HookBase
        from fastreid.utils import comm
        from fastreid_ewth.engine.trainer import EWTHTrainer

        OUT = os.environ["EWTH_PROBE_DIR"]
        NAN_AT = int(os.environ.get("EWTH_PROBE_NAN_AT", "-1"))
        # a stop signal at the end of step SIGNAL_AT of rank SIGNAL_RANK, to the process or its whole group;
        # SECOND_SIGNAL to the process while it writes the checkpoint of that stop
        SIGNAL_AT = int(os.environ.get("EWTH_PROBE_SIGNAL_AT", "-1"))
        SIGNAL = os.environ.get("EWTH_PROBE_SIGNAL", "SIGTERM")
        SIGNAL_RANK = int(os.environ.get("EWTH_PROBE_SIGNAL_RANK", "0"))
        SIGNAL_GROUP = os.environ.get("EWTH_PROBE_SIGNAL_GROUP") == "1"
        SECOND_SIGNAL = os.environ.get("EWTH_PROBE_SECOND_SIGNAL")
        record = {"steps": [], "saved": []}

        def dump():
            with open(os.path.join(OUT, "probe.rank{}.json".format(comm.get_rank())), "w") as f:
                json.dump(record, f)

        real_save = torch.save

        def save(obj, f, *args, **kwargs):  # every file torch.save writes, by the process that writes it
            if isinstance(getattr(f, "name", f), str):
                record["saved"].append(os.path.basename(getattr(f, "name", f)))
                dump()
                if SECOND_SIGNAL and "model_interrupted.pth" in record["saved"][-1]:
                    os.kill(os.getpid(), getattr(signal, SECOND_SIGNAL))
            return real_save(obj, f, *args, **kwargs)

        torch.save = save

        class Probe(HookBase):
            def before_train(self):
                self.forwards = 0
                self.trainer.model.register_forward_pre_hook(self.pre)
                # prepend: runs before the trainer's own hooks, as if the model had computed the value
                self.trainer.model.register_forward_hook(self.post, prepend=True)

            def pre(self, module, inputs):
                if module.training:
                    self.targets = inputs[0]["targets"].tolist()

            def post(self, module, inputs, output):
                if not module.training:
                    return None
                out = dict(output)
                if self.forwards == NAN_AT:
                    out["loss_triplet"] = out["loss_triplet"] * float("nan")
                self.forwards += 1
                self.local = {k: float(v) for k, v in out.items()}
                return out

            def after_step(self):
                entry = {"iter": self.trainer.iter, "targets": self.targets, "local": self.local}
                if comm.is_main_process():  # the value fastreid logs: this step's, not smoothed
                    entry["logged_total"] = self.trainer.storage.history("total_loss").latest()
                record["steps"].append(entry)
                dump()
                if self.trainer.iter == SIGNAL_AT and comm.get_rank() == SIGNAL_RANK:
                    number = getattr(signal, SIGNAL)
                    if SIGNAL_GROUP:  # as SLURM does: the trainer and its loader workers
                        os.killpg(os.getpgrp(), number)
                    else:
                        os.kill(os.getpid(), number)

        build_hooks = EWTHTrainer.build_hooks
        EWTHTrainer.build_hooks = lambda self: build_hooks(self) + [Probe()]
''')


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe")
    (folder / "sitecustomize.py").write_text(PROBE)
    return folder


def _env(small_root, probe=None, **extra):
    env = dict(os.environ, FASTREID_DATASETS=str(small_root), OMP_NUM_THREADS="1")
    if probe is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(probe)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _output(proc):
    with open(proc.log) as f:
        return f.read()


def _finish(proc, timeout=600):
    proc.wait(timeout=timeout)
    return proc.returncode, _output(proc)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _max_diff(a, b):
    """Largest absolute difference between two nested structures of tensors / numbers (inf if they differ in
    structure)."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape:
            return float("inf")
        return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return float("inf")
        return max([_max_diff(a[k], b[k]) for k in a] + [0.0])
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return float("inf")
        return max([_max_diff(x, y) for x, y in zip(a, b)] + [0.0])
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) if a == a or b == b else 0.0
    return 0.0 if a == b else float("inf")


# --------------------------------------------------------------------------------------------------
# 1. exact resume after SIGKILL
# --------------------------------------------------------------------------------------------------
RESUME_RUN = ["MODEL.LOSSES.NAME", '("CrossEntropyLoss", "EWTHLoss", "CenterLoss")',  # two optimizers
              "SOLVER.MAX_EPOCH", "3", "SOLVER.STEPS", "[2]",  # warm-up in epoch 0, decay at epoch 2
              "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "3", "SOLVER.IMS_PER_BATCH", "16",
              "DATALOADER.NUM_WORKERS", "1"]  # the demo's loader: augmentation in a worker process


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_root):
    """The run RESUME_RUN without interruption, started at the first use and trained alongside the test
    that uses it; call it for its ``model_final.pth`` (waits for the end)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "whole"
    procs = []
    proc = start_train_net(procs, out, *RESUME_RUN, env=_env(small_root))

    def final():
        rc, log = _finish(proc)
        assert rc == 0, log[-3000:]
        return _load(out / "model_final.pth")

    yield final
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _assert_same_end(a, b, interrupted):
    """``b`` (a run stopped at the checkpoint ``interrupted`` and resumed) ends as ``a`` (uninterrupted) does."""
    assert "loss_modules.CenterLoss.centers" in a["model"] and "center_optimizer" in a
    a_model, b_model = a["model"], b["model"]
    moved = _max_diff(a_model, interrupted["model"])
    assert moved > 1e-3  # the steps after the stop did train
    assert _max_diff(a_model, b_model) <= 1e-6
    for key in ("optimizer", "center_optimizer", "lr_sched", "warmup_sched"):
        assert _max_diff(a[key], b[key]) <= 1e-6, key
    # every process's random state at the end is the one the uninterrupted run has
    assert _max_diff(a["training_state"]["rng"], b["training_state"]["rng"]) == 0.0
    assert a["training_state"]["iteration"] == b["training_state"]["iteration"] == 27


def test_resume_after_sigkill_ends_where_the_uninterrupted_run_ends(tmp_path, small_root, launched,
                                                                     uninterrupted):
    env = _env(small_root)
    cut = tmp_path / "cut"
    victim = start_train_net(launched, cut, *RESUME_RUN, env=env)
    pointer = cut / "last_checkpoint"
    deadline = time.time() + 600
    while not pointer.exists():  # kill as soon as the first checkpoint is complete
        assert victim.poll() is None, "the run ended before its first checkpoint:\n" + _output(victim)[-3000:]
        assert time.time() < deadline, "no checkpoint after 10 minutes"
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)  # the trainer and its loader worker, as a pre-empted job
    rc, _ = _finish(victim)
    assert rc == -signal.SIGKILL
    killed_at = pointer.read_text()
    assert killed_at != "model_final.pth" and not (cut / "model_final.pth").exists()
    interrupted = _load(cut / killed_at)

    resumed = start_train_net(launched, cut, "--resume", *RESUME_RUN, env=env)
    rc, log = _finish(resumed)
    assert rc == 0, log[-3000:]
    assert "Resuming at epoch 1 (iteration 9)" in log, log[-3000:]
    _assert_same_end(uninterrupted(), _load(cut / "model_final.pth"), interrupted)


def test_sigterm_mid_epoch_checkpoints_that_step_and_resume_ends_where_the_uninterrupted_run_ends(
        tmp_path, small_root, probe, launched, uninterrupted):
    cut = tmp_path / "cut"
    # SIGTERM to the trainer and its loader worker after step 13 (epoch 1: steps 9-17), then Ctrl-C's SIGINT
    # while the checkpoint is written
    env = _env(small_root, probe, EWTH_PROBE_DIR=tmp_path, EWTH_PROBE_SIGNAL_AT=13, EWTH_PROBE_SIGNAL="SIGTERM",
               EWTH_PROBE_SIGNAL_GROUP=1, EWTH_PROBE_SECOND_SIGNAL="SIGINT")
    rc, log = _finish(start_train_net(launched, cut, *RESUME_RUN, env=env))
    assert rc == EXIT_INTERRUPTED == 75, log[-3000:]
    assert "Stopped by SIGTERM after iteration 14 (epoch 1, step 5 of 9)" in log, log[-3000:]
    assert "SIGINT: already stopping (SIGTERM first)" in log
    assert "Traceback" not in log
    probe_record = json.loads((tmp_path / "probe.rank0.json").read_text())
    assert [s["iter"] for s in probe_record["steps"]] == list(range(14))  # no step after the signal's
    assert (cut / "last_checkpoint").read_text() == "model_interrupted.pth"
    assert not (cut / "model_final.pth").exists()
    interrupted = _load(cut / "model_interrupted.pth")
    assert interrupted["iteration"] == interrupted["training_state"]["iteration"] == 14
    assert interrupted["epoch"] == 0  # the last epoch whose end ran

    resumed = start_train_net(launched, cut, "--resume", *RESUME_RUN, env=_env(small_root))
    rc, log = _finish(resumed)
    assert rc == 0, log[-3000:]
    assert "Resuming at epoch 1 (iteration 14)" in log, log[-3000:]
    _assert_same_end(uninterrupted(), _load(cut / "model_final.pth"), interrupted)
    assert not (cut / "model_interrupted.pth").exists()  # gone once a later checkpoint is the resume point


@pytest.mark.heavy
def test_a_stop_signal_to_one_of_two_processes_stops_both_after_the_same_step_and_only_rank0_writes(
        tmp_path, small_root, probe, launched):
    out = tmp_path / "ddp"
    out.mkdir()
    env = _env(small_root, probe, EWTH_PROBE_DIR=out, EWTH_PROBE_SIGNAL_AT=1, EWTH_PROBE_SIGNAL="SIGUSR2",
               EWTH_PROBE_SIGNAL_RANK=1)
    proc = start_train_net(launched, out, "--num-gpus", "2", "--dist-url", "auto", "SOLVER.MAX_EPOCH", "2",
                           "SOLVER.IMS_PER_BATCH", "32", "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "2",
                           "DATALOADER.NUM_WORKERS", "0", env=env)
    rc, log = _finish(proc)
    assert rc == EXIT_INTERRUPTED, log[-4000:]  # the launcher's status is the processes'
    ranks = [json.loads((out / "probe.rank{}.json".format(r)).read_text()) for r in (0, 1)]
    assert [s["iter"] for s in ranks[0]["steps"]] == [s["iter"] for s in ranks[1]["steps"]] == [0, 1]
    assert not any("model_interrupted" in name for name in ranks[1]["saved"])
    assert any("model_interrupted.pth" in name for name in ranks[0]["saved"])
    state = _load(out / "model_interrupted.pth")["training_state"]
    assert state["iteration"] == 2 and state["world_size"] == 2 and None not in state["rng"]  # both ranks'


# --------------------------------------------------------------------------------------------------
# 2. atomic checkpoints
# --------------------------------------------------------------------------------------------------
def _half_then_fail(real_save):
    def save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    return save


def test_a_save_failing_midway_leaves_the_previous_checkpoint_and_pointer(tmp_path, monkeypatch):
    from fastreid.utils.checkpoint import Checkpointer
    from fastreid_ewth.reliability.checkpoint import AtomicCheckpointer

    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters())
    ckpt = AtomicCheckpointer(model, str(tmp_path), optimizer=optimizer)
    ckpt.save("model_final", epoch=0)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    monkeypatch.setattr(torch, "save", _half_then_fail(torch.save))
    for name in ("model_final", "model_0001"):  # overwriting the file the pointer names, and a new file
        with pytest.raises(OSError, match="No space left"):
            ckpt.save(name, epoch=1)
    monkeypatch.undo()

    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]  # no half file, no temporary
    fresh = torch.nn.Linear(4, 3)
    extra = AtomicCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["epoch"] == 0
    assert all(torch.equal(fresh.state_dict()[k], good[k]) for k in good)

    # the same failure with fastreid's own Checkpointer corrupts the file its pointer names
    monkeypatch.setattr(torch, "save", _half_then_fail(torch.save))
    with pytest.raises(OSError):
        Checkpointer(model, str(tmp_path)).save("model_final", epoch=1)
    monkeypatch.undo()
    with pytest.raises(Exception):
        _load(tmp_path / "model_final.pth")


def test_a_pointer_write_failing_midway_keeps_the_previous_pointer(tmp_path):
    from fastreid_ewth.files import atomic_write

    pointer = tmp_path / "last_checkpoint"
    pointer.write_text("model_0004.pth")

    def half(f):
        f.write(b"model_00")
        raise KeyboardInterrupt  # even a kill-like interruption leaves no trace

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(pointer), half)
    assert pointer.read_text() == "model_0004.pth"
    assert os.listdir(tmp_path) == ["last_checkpoint"]


def test_temporaries_of_killed_saves_are_invisible_and_removed_on_resume(tmp_path):
    from fastreid_ewth.files import remove_stale_temporaries
    from fastreid_ewth.reliability.checkpoint import AtomicCheckpointer

    model = torch.nn.Linear(2, 2)
    ckpt = AtomicCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000")
    # what a SIGKILL during the next save leaves behind
    leftover = tmp_path / ".model_0001.pth.4242-deadbeef.partial"
    leftover.write_bytes(b"\x80half")
    assert ckpt.get_all_checkpoint_files() == [str(tmp_path / "model_0000.pth")]
    assert ckpt.get_checkpoint_file() == str(tmp_path / "model_0000.pth")
    assert remove_stale_temporaries(str(tmp_path)) == [str(leftover)]
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000.pth"]


def test_the_trainer_saves_atomically():
    from fastreid.utils.checkpoint import Checkpointer
    from fastreid_ewth.engine import EWTHTrainer
    from fastreid_ewth.reliability.checkpoint import AtomicCheckpointer

    holder = object.__new__(EWTHTrainer)
    model = torch.nn.Linear(2, 2)
    holder.checkpointer = Checkpointer(model, "out", save_to_disk=False, extra=model)  # as DefaultTrainer does
    assert isinstance(holder.checkpointer, AtomicCheckpointer)
    assert holder.checkpointer.checkpointables == {"extra": model} and holder.checkpointer.save_to_disk is False


# --------------------------------------------------------------------------------------------------
# the pieces of an exact resume
# --------------------------------------------------------------------------------------------------
def _identity_sampler():
    from fastreid.data.samplers import NaiveIdentitySampler

    data = [("img{}".format(i), "pid{}".format(i // 6), 0) for i in range(60)]  # 10 identities × 6 images
    return NaiveIdentitySampler(data, mini_batch_size=8, num_instances=4, seed=123)


def test_the_sampler_stream_ignores_other_random_draws_and_restarts_anywhere():
    from fastreid_ewth.reliability.resume import ResumableSampler

    quiet = ResumableSampler(_identity_sampler(), seed=0)
    it = iter(quiet)
    reference = [next(it) for _ in range(100)]
    assert [pos for _, pos in reference] == list(range(100))

    busy = iter(ResumableSampler(_identity_sampler(), seed=0))
    noisy = []
    for _ in range(100):
        noisy.append(next(busy))
        np.random.rand(3), torch.rand(2), random.random()  # what augmentations and evaluation draw
    assert noisy == reference

    restarted = ResumableSampler(_identity_sampler(), seed=0)
    restarted.start = 37
    it = iter(restarted)
    assert [next(it) for _ in range(63)] == reference[37:]

    # fastreid's sampler alone is not a function of its seed once something else draws from numpy
    plain = iter(_identity_sampler())
    mixed = []
    for _ in range(100):
        mixed.append(next(plain))
        np.random.rand(3)
    assert mixed != [index for index, _ in reference]


class _RandomItems:
    """A dataset whose items are random draws: what an augmentation pipeline looks like to the RNG."""

    def __len__(self):
        return 10

    def __getitem__(self, index):
        return index, random.random(), float(np.random.rand()), float(torch.rand(1))


def test_each_sample_is_augmented_from_its_position_alone():
    from fastreid_ewth.reliability.resume import SeededSamples

    samples = SeededSamples(_RandomItems(), seed=5, rank=0)
    first = samples[(3, 17)]
    np.random.seed(999), torch.manual_seed(999), random.seed(999)
    state = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    assert samples[(3, 17)] == first  # whatever the caller's generators are
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    assert torch.equal(torch.get_rng_state(), state[2])  # and they are left as they were
    assert samples[(3, 18)][1:] != first[1:]
    assert SeededSamples(_RandomItems(), seed=5, rank=1)[(3, 17)][1:] != first[1:]


def _demo_cfg(**overrides):
    from fastreid.config import get_cfg
    from fastreid_ewth.config import add_ewth_config

    cfg = add_ewth_config(get_cfg())
    cfg.merge_from_file(str(REPO / "projects" / "Demo.yml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", 16])
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


def test_training_batches_do_not_depend_on_loader_workers_and_resume_mid_stream(datasets_root):
    from fastreid_ewth.engine import EWTHTrainer

    def batches(workers, skip=0, n=3):
        np.random.seed(0)  # the sampler's seed comes from numpy, as after setup_cfg's SEED
        loader = EWTHTrainer.build_train_loader(_demo_cfg(**{"DATALOADER.NUM_WORKERS": workers}))
        loader.resume_at(skip)
        it = iter(loader)
        return [next(it) for _ in range(n)]

    torch.manual_seed(0)
    state = torch.get_rng_state()
    in_process = batches(0)
    assert torch.equal(torch.get_rng_state(), state)  # loading consumed none of the trainer's random numbers
    in_worker = batches(1)
    resumed = batches(1, skip=1, n=2)
    for x, y in zip(in_process, in_worker):
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["targets"], y["targets"])
    for x, y in zip(in_process[1:], resumed):
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["targets"], y["targets"])


def test_training_state_round_trip_restores_every_generator_and_loads_weights_only(tmp_path):
    from fastreid_ewth.reliability.resume import TrainingState

    trainer = _Namespace(iter=18, data_loader=_Namespace(seeds={"sampler": 7, "samples": 7}, batch_size=16))
    state = TrainingState(trainer)
    state.best_metric = 0.5
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    np.random.randn()  # a cached Gaussian is part of numpy's state
    torch.save({"training_state": state.state_dict()}, tmp_path / "ckpt.pth")
    expected = (random.random(), np.random.randn(5).tolist(), torch.rand(5).tolist())

    loaded = torch.load(tmp_path / "ckpt.pth", weights_only=True)["training_state"]  # torch >= 2.6 default
    assert loaded["iteration"] == 18 and loaded["data"] == {"sampler": 7, "samples": 7} and loaded["batch"] == 16
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    other = TrainingState(trainer)
    other.load_state_dict(loaded)
    assert other.best_metric == 0.5
    other.restore_random_state()
    assert (random.random(), np.random.randn(5).tolist(), torch.rand(5).tolist()) == expected
    with pytest.raises(ValueError, match="format"):
        other.load_state_dict(dict(loaded, format=99))


# --------------------------------------------------------------------------------------------------
# 3. multi-process with gloo
# --------------------------------------------------------------------------------------------------
@pytest.mark.heavy
def test_two_process_gloo_run_splits_batches_reduces_losses_and_only_rank0_writes(tmp_path, small_root, probe,
                                                                                 launched):
    out = tmp_path / "ddp"
    out.mkdir()
    proc = start_train_net(launched, out, "--num-gpus", "2", "--dist-url", "auto", "SOLVER.MAX_EPOCH", "1",
                      "SOLVER.IMS_PER_BATCH", "32", "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", "1",
                      "DATALOADER.NUM_WORKERS", "0", env=_env(small_root, probe, EWTH_PROBE_DIR=out))
    rc, log = _finish(proc)
    assert rc == 0, log[-4000:]
    assert "World size: 2" in log and "| SynthReID" in log  # trained and evaluated as one 2-process run
    ranks = [json.loads((out / "probe.rank{}.json".format(r)).read_text()) for r in (0, 1)]
    steps = [r["steps"] for r in ranks]
    assert [s["iter"] for s in steps[0]] == [s["iter"] for s in steps[1]] == [0, 1, 2, 3]  # 151 // 32 steps
    for rank_steps in steps:
        for s in rank_steps:  # 32 images over 2 processes: 16 each, P=4 identities × K=4
            counts = sorted(s["targets"].count(t) for t in set(s["targets"]))
            assert counts == [4, 4, 4, 4], s["targets"]
    assert any(a["targets"] != b["targets"] for a, b in zip(*steps))  # each process has its own half
    for a, b in zip(*steps):  # rank 0 logs the mean over the processes of each process's total loss
        local = [sum(a["local"].values()), sum(b["local"].values())]
        assert local[0] != local[1]
        assert a["logged_total"] == pytest.approx(np.mean(local), rel=1e-5)
    assert ranks[1]["saved"] == []
    assert any("model_final.pth" in name for name in ranks[0]["saved"])
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    state = _load(out / "model_final.pth")["training_state"]
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and None not in state["rng"]  # both ranks' RNG


# --------------------------------------------------------------------------------------------------
# 5. non-finite loss
# --------------------------------------------------------------------------------------------------
def test_nonfinite_loss_stops_before_the_update_and_saves_the_last_good_state(tmp_path, small_root, probe,
                                                                             launched):
    out = tmp_path / "nan"
    out.mkdir()
    proc = start_train_net(launched, out, "SOLVER.MAX_EPOCH", "3", "SOLVER.STEPS", "[2]", "SOLVER.CHECKPOINT_PERIOD", "1",
                      "TEST.EVAL_PERIOD", "3", "SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_WORKERS", "0",
                      env=_env(small_root, probe, EWTH_PROBE_DIR=out, EWTH_PROBE_NAN_AT=11))
    rc, log = _finish(proc)
    assert rc != 0
    assert "Non-finite loss at iteration 11 (epoch 1, step 3 of 9): loss_triplet = nan" in log, log[-3000:]
    assert "model_last_good.pth" in log and "continues from {}".format(out / "model_0000.pth") in log
    assert [s["iter"] for s in json.loads((out / "probe.rank0.json").read_text())["steps"]] == list(range(11))
    assert (out / "last_checkpoint").read_text() == "model_0000.pth"  # --resume still picks the periodic one
    snapshot = _load(out / "model_last_good.pth")
    assert snapshot["iteration"] == 11 and snapshot["training_state"]["iteration"] == 11
    assert list(snapshot["nonfinite"]) == [0] and list(snapshot["nonfinite"][0]) == ["loss_triplet"]
    weights = snapshot["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())  # no NaN step applied
    assert _max_diff(weights, _load(out / "model_0000.pth")["model"]) > 0  # two good steps after the checkpoint


class _Namespace:
    """Attributes given as keywords (a stand-in for a trainer; unlike SimpleNamespace, weak-referenceable)."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_gloo(rank, world_size, port):
    """Join this process to a gloo group of ``world_size`` on a local port, with one intra-op thread."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{}".format(port), world_size=world_size,
                            rank=rank)


def _guarded_step(rank, world_size, port, out, bad_rank, results):
    """One training forward on ``rank`` of a gloo group; only ``bad_rank`` computes a NaN loss."""
    import torch.distributed as dist

    from fastreid_ewth.reliability.checkpoint import AtomicCheckpointer
    from fastreid_ewth.reliability.nan_guard import NonFiniteLossError, NonFiniteLossGuard

    _join_gloo(rank, world_size, port)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def forward(self, x):
            bad = float("nan") if rank == bad_rank else 1.0
            return {"loss_cls": (self.w * x).sum(), "loss_triplet": (self.w * x).sum() * bad}

    model = Model()
    trainer = _Namespace(iter=5, epoch=0, iters_per_epoch=9, cfg=_Namespace(OUTPUT_DIR=out),
                         checkpointer=AtomicCheckpointer(model, out, save_to_disk=rank == 0))
    model.register_forward_hook(NonFiniteLossGuard(trainer))
    try:
        model(torch.ones(2))
        results.put((rank, "no error"))
    except NonFiniteLossError as e:
        results.put((rank, str(e)))
    finally:
        dist.destroy_process_group()


def test_a_nonfinite_loss_on_one_process_stops_every_process(tmp_path):
    # fork: the children start at once (no new interpreter), the guard's collectives are real gloo ones
    ctx = multiprocessing.get_context("fork")
    results, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_guarded_step, args=(r, 2, port, str(tmp_path), 1, results)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
    assert not hung, "a process is still waiting: the guard deadlocked"
    messages = dict(results.get(timeout=5) for _ in procs)
    for rank in (0, 1):
        assert "Non-finite loss at iteration 5 (epoch 0, step 6 of 9): loss_triplet = nan on rank 1" in messages[rank]
    assert os.listdir(tmp_path) == ["model_last_good.pth"]  # written once, by rank 0
    assert torch.equal(_load(tmp_path / "model_last_good.pth")["model"]["w"], torch.ones(2))


# --------------------------------------------------------------------------------------------------
# 6. the cost of exactness: the data stream and the guard, cheaper but the same
# --------------------------------------------------------------------------------------------------
class _FiniteSampler:
    """A sampler of fastreid's kind but with an end: numpy and Python draws, ``total`` indices."""

    def __init__(self, total):
        self._seed = 11
        self.total = total

    def __iter__(self):
        np.random.seed(self._seed)
        for _ in range(self.total):
            yield int(np.random.randint(1000)) + random.randrange(7) * 1000


def _index_by_index(sampler, start, n):
    """The stream as drawn before chunking: the private generators swapped in around every single index."""
    from fastreid_ewth.reliability.resume import _PrivateGenerators

    generators = _PrivateGenerators(sampler._seed)
    with generators.active():
        indices = iter(sampler)
        for _ in range(start):
            next(indices)
    out = []
    for position in range(start, start + n):
        with generators.active():
            index = next(indices, None)
        if index is None:
            break
        out.append((index, position))
        np.random.rand(2), torch.rand(1), random.random()  # the caller's draws in between
    return out


def test_the_sampler_stream_drawn_in_chunks_is_the_one_drawn_index_by_index(monkeypatch):
    from fastreid_ewth.reliability import resume

    swaps = []
    active = resume._PrivateGenerators.active
    monkeypatch.setattr(resume._PrivateGenerators, "active", lambda self: swaps.append(1) or active(self))
    n = 2 * resume._CHUNK + 77  # across two chunk boundaries
    for start in (0, 37, resume._CHUNK + 5):
        reference = _index_by_index(_identity_sampler(), start, n)
        sampler = resume.ResumableSampler(_identity_sampler(), seed=0)
        sampler.start = start
        swaps.clear()
        it = iter(sampler)
        drawn = []
        for _ in range(n):
            drawn.append(next(it))
            np.random.rand(3), torch.rand(2), random.random()
        assert drawn == reference, start
        assert len(swaps) <= 1 + -(-n // resume._CHUNK)  # one for the start, one per chunk: not one per index

    # the caller's generators are the same before and after a draw that starts a new chunk
    it = iter(resume.ResumableSampler(_identity_sampler(), seed=0))
    for _ in range(resume._CHUNK):
        next(it)
    state = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    next(it)
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    assert torch.equal(torch.get_rng_state(), state[2])

    # a finite sampler ends where it ends, mid-chunk or on a chunk boundary
    for total in (resume._CHUNK + 3, resume._CHUNK):
        assert list(resume.ResumableSampler(_FiniteSampler(total), seed=0)) == _index_by_index(
            _FiniteSampler(total), 0, total + 10)


def _as_list(batch):
    return batch


def test_a_sample_loaded_in_a_worker_is_the_one_loaded_in_the_training_process():
    from torch.utils.data import DataLoader

    from fastreid_ewth.reliability.resume import SeededSamples

    samples = SeededSamples(_RandomItems(), seed=5, rank=0)
    keys = [(3, 17), (4, 18), (3, 40), (9, 0)]
    one_by_one = [samples[k] for k in keys]
    state = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    assert samples.__getitems__(keys) == one_by_one  # a batch at a time: the same samples
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    assert torch.equal(torch.get_rng_state(), state[2])  # and the caller's generators are put back
    assert len({s[1:] for s in one_by_one}) == len(keys)

    for workers in (0, 1, 2):
        loader = DataLoader(samples, batch_sampler=[keys[:2], keys[2:]], num_workers=workers, collate_fn=_as_list)
        assert [s for batch in loader for s in batch] == one_by_one, workers

    # the seeds are those of earlier versions (the README's measured runs, checkpoints written before)
    words = np.random.SeedSequence([5, 0, 17]).generate_state(4)
    random.seed(int(words[0]) << 32 | int(words[1])), np.random.seed(int(words[2]))
    torch.default_generator.manual_seed(int(words[3]))
    assert _RandomItems()[3] == one_by_one[0]


def _guarded_trainer(tmp_path):
    from conftest import stock_baseline_cfg
    from fastreid.engine import DefaultTrainer

    from fastreid_ewth.reliability import ReliableTraining

    class Trainer(ReliableTraining, DefaultTrainer):
        pass

    trainer = Trainer(stock_baseline_cfg(tmp_path, **{"SOLVER.IMS_PER_BATCH": 16}))
    trainer.resume_or_load(resume=False)
    trainer.iter = trainer.start_iter = 0
    trainer.epoch = 0
    return trainer


def test_the_guard_reads_nothing_back_in_the_forward_pass_and_a_nan_stops_before_the_optimizer_step(
        tmp_path, datasets_root, monkeypatch):
    from fastreid.utils.events import EventStorage

    from fastreid_ewth.reliability.nan_guard import NonFiniteLossError, NonFiniteLossGuard

    trainer = _guarded_trainer(tmp_path)
    in_hook = []

    def no_host_read(name):
        real = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            assert not in_hook, "the guard's forward hook called Tensor.{}".format(name)
            return real(self, *args, **kwargs)

        return read

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, no_host_read(name))
    hook = NonFiniteLossGuard.__call__

    def watched(self, *args):
        in_hook.append(1)
        try:
            return hook(self, *args)
        finally:
            in_hook.pop()

    monkeypatch.setattr(NonFiniteLossGuard, "__call__", watched)
    steps, poison = [], []
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: steps.append(trainer.iter) or step(*a, **k)
    trainer.model.register_forward_hook(
        lambda m, i, out: {k: v * float("nan") if poison and k == "loss_triplet" else v for k, v in out.items()}
        if m.training else None, prepend=True)

    with EventStorage(0) as trainer.storage:
        trainer.before_train()
        for trainer.iter in range(2):  # good steps: checked without a host read in the hook
            trainer.before_step()
            trainer.run_step()
            trainer.after_step()
        assert steps == [0, 1]
        good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        adam = {k: v.clone() for k, v in trainer.optimizer.state_dict()["state"][0].items()}
        poison.append(1)
        trainer.iter = 2
        trainer.before_step()
        with pytest.raises(NonFiniteLossError) as error:
            trainer.run_step()
        assert trainer.storage.latest()["total_loss"][1] == 1  # fastreid logged the good steps only
    assert type(error.value) is NonFiniteLossError  # not fastreid's own FloatingPointError, raised later
    assert str(error.value).startswith("Non-finite loss at iteration 2 (epoch 0, step 3 of ")
    assert "loss_triplet = nan" in str(error.value) and "loss_cls" not in str(error.value)
    assert steps == [0, 1]  # the bad step never reached the optimizer
    assert all(p.grad is not None for p in trainer.model.parameters() if p.requires_grad)  # after the backward
    weights = {k: v for k, v in trainer.model.state_dict().items() if v.is_floating_point()}
    assert all(torch.equal(weights[k], good[k]) for k in weights if "running" not in k)
    snapshot = _load(tmp_path / "model_last_good.pth")
    assert all(torch.equal(snapshot["model"][k], good[k]) for k in weights if "running" not in k)
    assert _max_diff(snapshot["optimizer"]["state"][0], adam) == 0.0
    assert snapshot["iteration"] == 2


def test_the_guard_of_a_stand_in_trainer_checks_in_the_hook(tmp_path):
    from fastreid_ewth.reliability.checkpoint import AtomicCheckpointer
    from fastreid_ewth.reliability.nan_guard import NonFiniteLossError, NonFiniteLossGuard

    model = torch.nn.Linear(2, 1)
    trainer = _Namespace(iter=0, epoch=0, iters_per_epoch=9, cfg=_Namespace(OUTPUT_DIR=str(tmp_path)),
                         checkpointer=AtomicCheckpointer(model, str(tmp_path)))
    guard = NonFiniteLossGuard(trainer)
    assert guard(model, (), {"loss": torch.tensor(1.0)}) is None
    with pytest.raises(NonFiniteLossError, match="loss = inf"):
        guard(model, (), {"loss": torch.tensor(float("inf"))})


def _deferred_step(rank, world_size, port, out, bad_rank, results):
    """One step of fastreid's SimpleTrainer on ``rank`` of a gloo group, guarded; only ``bad_rank`` gets a NaN."""
    import torch.distributed as dist
    from fastreid.engine.train_loop import SimpleTrainer
    from fastreid.utils.events import EventStorage

    from fastreid_ewth.reliability.checkpoint import AtomicCheckpointer
    from fastreid_ewth.reliability.nan_guard import NonFiniteLossError, NonFiniteLossGuard

    _join_gloo(rank, world_size, port)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def forward(self, x):
            bad = float("nan") if rank == bad_rank and x["step"] == 1 else 1.0
            return {"loss_cls": (self.w * x["x"]).sum(), "loss_triplet": (self.w * x["x"]).sum() * bad}

    model = Model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = []
    step = optimizer.step
    optimizer.step = lambda *a, **k: steps.append(1) or step(*a, **k)
    inner = SimpleTrainer(model, [{"x": torch.ones(2), "step": 0}, {"x": torch.ones(2), "step": 1}], optimizer,
                          None)
    trainer = _Namespace(iter=5, epoch=0, iters_per_epoch=9, cfg=_Namespace(OUTPUT_DIR=out), _trainer=inner,
                         checkpointer=AtomicCheckpointer(model, out, save_to_disk=rank == 0))
    guard = NonFiniteLossGuard(trainer)
    model.register_forward_hook(guard)
    try:
        with EventStorage(5):
            inner.iter = 5
            inner.run_step()
            after_good = model.w.detach().clone()
            trainer.iter = inner.iter = 6
            inner.run_step()
        results.put((rank, "no error"))
    except NonFiniteLossError as e:
        unchanged = torch.equal(model.w.detach(), after_good)
        results.put((rank, (guard._deferred, len(steps), unchanged, str(e))))
    finally:
        dist.destroy_process_group()


def test_a_nonfinite_loss_read_after_the_backward_pass_still_stops_every_process(tmp_path):
    ctx = multiprocessing.get_context("fork")
    results, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_deferred_step, args=(r, 2, port, str(tmp_path), 1, results)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
    assert not hung, "a process is still waiting: the guard deadlocked"
    outcome = dict(results.get(timeout=5) for _ in procs)
    for rank in (0, 1):
        deferred, optimizer_steps, unchanged, message = outcome[rank]
        assert deferred  # checked in fastreid's metrics write, not in the hook
        assert optimizer_steps == 1 and unchanged  # the good step only
        assert "Non-finite loss at iteration 6 (epoch 0, step 7 of 9): loss_triplet = nan on rank 1" in message
    assert os.listdir(tmp_path) == ["model_last_good.pth"]
    assert torch.equal(_load(tmp_path / "model_last_good.pth")["model"]["w"], torch.full((2,), 0.8))


def test_fastreid_writes_each_steps_metrics_after_the_backward_pass_and_before_the_optimizer_step(
        tmp_path, datasets_root):
    """What ``compat.call_before_write_metrics`` relies on (and the guard with it)."""
    from conftest import stock_baseline_cfg
    from fastreid.engine import DefaultTrainer
    from fastreid.utils.events import EventStorage

    from fastreid_ewth import compat

    trainer = DefaultTrainer(stock_baseline_cfg(tmp_path, **{"SOLVER.IMS_PER_BATCH": 16}))
    trainer.iter = 0
    model = trainer.model
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    seen, order = [], []
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: order.append("optimizer.step") or step(*a, **k)

    def callback():
        order.append("callback")
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        seen.append({
            "backward done": all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads),
            "weights unchanged": all(torch.equal(model.state_dict()[k], v) for k, v in before.items()
                                     if "running" not in k and "num_batches" not in k),
            "metrics not written yet": "total_loss" not in trainer.storage.latest(),
        })

    assert compat.call_before_write_metrics(trainer, callback)
    assert not compat.call_before_write_metrics(_Namespace(_trainer=object()), callback)
    with EventStorage(0) as trainer.storage:
        trainer.run_step()
        assert order == ["callback", "optimizer.step"]
        assert seen == [{"backward done": True, "weights unchanged": True, "metrics not written yet": True}]
        assert "total_loss" in trainer.storage.latest()
        # on the main process fastreid's own check raises, after the callback: the guard must come first
        with pytest.raises(FloatingPointError, match="infinite or NaN"):
            trainer._trainer._write_metrics({"loss_cls": torch.tensor(float("nan"))}, 0.0)
        assert order[-1] == "callback"
