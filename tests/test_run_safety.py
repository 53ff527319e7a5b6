"""Run safety: files that are not what they should be, and one training per output folder.

- ``MODEL.WEIGHTS`` / ``MODEL.BACKBONE.PRETRAIN_PATH`` that are not PyTorch checkpoints, and an ``OUTPUT_DIR``
  that cannot be written, are refused before anything is written, naming the file and what it is;
- ``--resume`` over a damaged or missing checkpoint continues from the newest intact one (with the same
  weights as a resume from that one by hand) or stops saying how to choose one;
- a training locks its ``OUTPUT_DIR``: a second one is refused at once naming the holder (also with
  ``--num-gpus 2``), ``--eval-only`` is not, and the lock of a SIGKILLed run does not block ``--resume``.

Trainings are ``tools/train_net.py`` on projects/Demo.yml over a 16-identity slice of SynthReID (9 steps of
16 images per epoch), one intra-op thread per process, so that concurrent runs compute as they would alone.
"""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile

import pytest
import torch
import yaml

from conftest import REPO, TRAIN_NET, start_train_net

# 2 epochs, a checkpoint after each; evaluation only after the last checkpoint (so no model_best.pth)
SHORT_RUN = ["SOLVER.MAX_EPOCH", "2", "SOLVER.STEPS", "[2]", "SOLVER.CHECKPOINT_PERIOD", "1",
             "TEST.EVAL_PERIOD", "100", "SOLVER.IMS_PER_BATCH", "16"]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def env(small_root, monkeypatch):
    monkeypatch.setenv("FASTREID_DATASETS", str(small_root))  # for the in-process runs too
    return dict(os.environ, FASTREID_DATASETS=str(small_root), OMP_NUM_THREADS="1")


def _finish(proc, timeout=600):
    proc.wait(timeout=timeout)
    with open(proc.log) as f:
        return proc.returncode, f.read()


def _wait_for(condition, proc, what, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before {}:\n{}".format(what, _finish(proc)[1][-3000:])
        assert time.time() < deadline, "no {} after {} s".format(what, timeout)
        time.sleep(0.01)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def _train_in_process(*args):
    """``tools/train_net.py`` without a new interpreter (for runs refused before anything is built)."""
    from fastreid_ewth.train import run

    return run(["--config-file", str(REPO / "projects" / "Demo.yml"), *map(str, args)])


# the files that are not checkpoints, as they turn up
def _checkpoint_bytes():
    import io

    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(1000)}, "epoch": 0}, buffer)
    return buffer.getvalue()


def _legacy_bytes():
    import io

    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(1000)}}, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


BAD_FILES = {  # name: (content, what the message says)
    "empty": (lambda: b"", "is empty (0 bytes)"),
    "text": (lambda: b"epoch 12: mAP 81.3\nsaved by hand\n",
             "looks like a text file, not a PyTorch checkpoint; it starts with 'epoch 12: mAP 81.3\\nsaved by"),
    "lfs_pointer": (lambda: b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 94371542\n",
                    "is a Git LFS pointer, not the checkpoint itself"),
    "truncated_zip": (lambda: _checkpoint_bytes()[:2500],
                      "is a truncated zip checkpoint (2,500 bytes): the end-of-archive record"),
    "truncated_legacy": (lambda: _legacy_bytes()[:-100],
                         "is a legacy-format (pickle) file that cannot be loaded (RuntimeError: unexpected EOF"),
    "directory": (None, "is a directory, not a checkpoint file"),
}


def _bad_file(tmp_path, kind):
    path = tmp_path / "{}.pth".format(kind)
    make, message = BAD_FILES[kind]
    if make is None:
        path.mkdir()
    else:
        path.write_bytes(make())
    return path, message


# --------------------------------------------------------------------------------------------------
# 1. files that are not checkpoints
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("key", ["MODEL.WEIGHTS", "MODEL.BACKBONE.PRETRAIN_PATH"])
def test_a_file_that_is_not_a_checkpoint_is_refused_before_anything_is_written(key, kind, tmp_path, env):
    bad, message = _bad_file(tmp_path, kind)
    out = tmp_path / "out"
    extra = ["MODEL.BACKBONE.PRETRAIN", "True"] if key.startswith("MODEL.BACKBONE") else []
    with pytest.raises(ValueError) as error:
        _train_in_process(key, bad, *extra, "OUTPUT_DIR", out)
    text = str(error.value)
    assert text.startswith("{} {!r} {}".format(key, str(bad), message)), text
    fix = "Pass the checkpoint of a finished run" if key == "MODEL.WEIGHTS" else "Pass ImageNet weights"
    assert fix in text
    assert not out.exists()


def test_the_refusal_reaches_the_command_line(tmp_path, env):
    bad, message = _bad_file(tmp_path, "text")
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, TRAIN_NET, "--config-file", "projects/Demo.yml", "MODEL.WEIGHTS", str(bad),
                          "OUTPUT_DIR", str(out)], cwd=REPO, env=env, capture_output=True, text=True)
    assert res.returncode != 0
    assert "MODEL.WEIGHTS {!r} {}".format(str(bad), message) in res.stderr, res.stderr[-2000:]
    assert not out.exists()


def test_pretrain_path_is_only_checked_when_pretrain_is_on(tmp_path, env):
    from fastreid_ewth.engine import load_cfg, validate_run

    bad, _ = _bad_file(tmp_path, "text")
    opts = ["MODEL.BACKBONE.PRETRAIN_PATH", str(bad), "OUTPUT_DIR", str(tmp_path / "out")]
    validate_run(load_cfg(str(REPO / "projects" / "Demo.yml"), opts))  # PRETRAIN False: fastreid ignores it
    with pytest.raises(ValueError, match="MODEL.BACKBONE.PRETRAIN_PATH"):
        validate_run(load_cfg(str(REPO / "projects" / "Demo.yml"), opts + ["MODEL.BACKBONE.PRETRAIN", "True"]))
    # --eval-only builds the model without the ImageNet weights
    validate_run(load_cfg(str(REPO / "projects" / "Demo.yml"), opts + ["MODEL.BACKBONE.PRETRAIN", "True"]),
                 eval_only=True)


def test_checkpoint_inspection_is_cheap_and_tells_what_a_file_is(tmp_path):
    from fastreid_ewth.reliability.checkpoint import (DamagedCheckpointError, describe_checkpoint_problem,
                                                      load_checkpoint)

    good = tmp_path / "good.pth"
    good.write_bytes(_checkpoint_bytes())
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(_legacy_bytes())
    assert describe_checkpoint_problem(good) is None and describe_checkpoint_problem(legacy) is None
    assert load_checkpoint(good)["epoch"] == 0
    html = tmp_path / "download.pth"
    html.write_bytes(b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title>")
    assert describe_checkpoint_problem(html).startswith("is a web page, not a checkpoint (a failed download?)")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("weights/readme.txt", "hi")
    assert "zip archive but not a PyTorch checkpoint" in describe_checkpoint_problem(tmp_path / "other.zip")
    assert describe_checkpoint_problem(tmp_path / "nothing.pth") == "does not exist"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model_final.pth").write_bytes(_checkpoint_bytes())
    assert describe_checkpoint_problem(run_dir) == "is a directory, not a checkpoint file: pass a file in it, " \
                                                   "e.g. {}".format(run_dir / "model_final.pth")
    # the zip checks read the first bytes and the archive's directory, nothing more: a zip whose content is
    # damaged passes them, and only a full load (what the checkpointer does) finds it
    data = bytearray(_checkpoint_bytes())
    start = data.index(b"\x80", data.index(b"data.pkl"))  # the pickle of the checkpoint's structure
    data[start:start + 8] = b"\xff" * 8
    flipped = tmp_path / "flipped.pth"
    flipped.write_bytes(bytes(data))
    assert describe_checkpoint_problem(flipped) is None
    with pytest.raises(DamagedCheckpointError, match="flipped.pth is a complete zip checkpoint .* whose content is "
                                                     "damaged .*UnpicklingError"):
        load_checkpoint(flipped)
    # --eval-only loads MODEL.WEIGHTS in full: it names the file and what is wrong with it
    from fastreid_ewth.engine import load_cfg, load_trained_model

    with pytest.raises(ValueError, match=r"^MODEL.WEIGHTS '.*flipped.pth' is a complete zip checkpoint .* whose "
                                         r"content is damaged .*Pass the checkpoint of a finished run"):
        load_trained_model(load_cfg(str(REPO / "projects" / "Demo.yml"), ["MODEL.WEIGHTS", str(flipped)]))


# --------------------------------------------------------------------------------------------------
# 2. OUTPUT_DIR that cannot hold the run
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eval_only", [False, True], ids=["train", "eval_only"])
def test_an_output_dir_that_is_a_file_is_refused(tmp_path, env, eval_only):
    out = tmp_path / "out"
    out.write_text("a file where the run folder should be\n")
    with pytest.raises(ValueError) as error:
        _train_in_process(*(["--eval-only"] if eval_only else []), "OUTPUT_DIR", out)
    assert str(error.value).startswith("OUTPUT_DIR {!r} is a file, not a folder".format(str(out)))
    assert "pass an OUTPUT_DIR this user can create and write" in str(error.value)
    assert out.read_text() == "a file where the run folder should be\n"


def test_an_output_dir_under_a_file_is_refused(tmp_path, env):
    (tmp_path / "runs").write_text("")
    out = tmp_path / "runs" / "demo" / "seed0"
    with pytest.raises(ValueError) as error:
        _train_in_process("OUTPUT_DIR", out)
    assert str(error.value).startswith("OUTPUT_DIR {!r} cannot be created: {!r} is a file, not a folder".format(
        str(out), str(tmp_path / "runs")))
    assert sorted(os.listdir(tmp_path)) == ["runs"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the permissions (simulated in the next test)")
def test_an_output_dir_without_write_permission_is_refused(tmp_path, env):
    parent = tmp_path / "readonly"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="cannot be created: no write permission in"):
            _train_in_process("OUTPUT_DIR", parent / "out")
        parent.chmod(0o755)
        (parent / "out").mkdir()
        parent.chmod(0o555)
        (parent / "out").chmod(0o555)
        with pytest.raises(ValueError, match="cannot be written"):
            _train_in_process("--eval-only", "OUTPUT_DIR", parent / "out")
    finally:
        parent.chmod(0o755)
        if (parent / "out").exists():
            (parent / "out").chmod(0o755)


def test_an_output_dir_without_write_permission_is_refused_simulated(tmp_path, env, monkeypatch):
    # root ignores permissions, so what the OS answers a normal user is simulated
    parent, existing = tmp_path / "readonly", tmp_path / "existing"
    parent.mkdir()
    existing.mkdir()
    real_access = os.access
    denied = {str(parent), str(existing)}
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: str(p) not in denied and real_access(p, mode, **kw))
    with pytest.raises(ValueError) as error:
        _train_in_process("OUTPUT_DIR", parent / "out")
    assert str(error.value).startswith("OUTPUT_DIR {!r} cannot be created: no write permission in {!r}".format(
        str(parent / "out"), str(parent)))
    with pytest.raises(ValueError) as error:
        _train_in_process("--eval-only", "OUTPUT_DIR", existing)
    assert str(error.value).startswith("OUTPUT_DIR {!r} cannot be written (no write permission".format(str(existing)))
    assert os.listdir(parent) == [] and os.listdir(existing) == []


# --------------------------------------------------------------------------------------------------
# 3. --resume over a damaged or missing checkpoint
# --------------------------------------------------------------------------------------------------
def _tiny_checkpointer(folder):
    from fastreid_ewth.reliability.checkpoint import AtomicCheckpointer

    model = torch.nn.Linear(3, 2)
    return AtomicCheckpointer(model, str(folder), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_the_resume_point_is_the_newest_intact_checkpoint(tmp_path):
    from fastreid_ewth.reliability.checkpoint import NoResumeCheckpointError

    ckpt = _tiny_checkpointer(tmp_path)
    for epoch in range(4):  # as fastreid's PeriodicCheckpointer: model_best before the epoch's own
        if epoch in (1, 2):
            ckpt.save("model_best", epoch=epoch)
        ckpt.save("model_{:04d}".format(epoch), epoch=epoch)
    ckpt.save_snapshot("model_last_good", epoch=3, iteration=31)  # never a resume point
    assert ckpt.find_resume_checkpoint(8, 10) == (str(tmp_path / "model_0003.pth"), None)

    _truncate(tmp_path / "model_0003.pth")
    path, warning = ckpt.find_resume_checkpoint(8, 10)
    assert path == str(tmp_path / "model_0002.pth")
    assert warning == (
        "--resume: {d}/last_checkpoint names {d}/model_0003.pth, which is a truncated zip checkpoint ({size:,} bytes): "
        "the end-of-archive record that torch.save writes last is missing, so the write or copy was cut off. "
        "Resuming from {d}/model_0002.pth instead, the newest intact checkpoint (written after epoch 2): epoch 3 "
        "(8 iterations) is trained again. The damaged file is replaced when the run saves that checkpoint again."
        .format(d=tmp_path, size=(tmp_path / "model_0003.pth").stat().st_size))

    _truncate(tmp_path / "model_0002.pth")  # then model_best.pth (epoch 2) is newer than model_0001.pth
    path, warning = ckpt.find_resume_checkpoint(8, 10)
    assert path == str(tmp_path / "model_best.pth") and "written after epoch 2" in warning
    assert "; model_0002.pth also is a truncated zip checkpoint" in warning

    (tmp_path / "model_0003.pth").unlink()  # a pointer naming a missing file
    (tmp_path / "model_best.pth").unlink()
    path, warning = ckpt.find_resume_checkpoint(8, 10)
    assert path == str(tmp_path / "model_0001.pth")
    assert "names {}, which does not exist".format(tmp_path / "model_0003.pth") in warning
    assert "epochs 2-3 (16 iterations) are trained again" in warning
    # what was chosen is loaded once: the checkpointer's next load of it gets that content
    extra = ckpt.load(path)
    assert extra["epoch"] == 1

    for name in ("model_0000.pth", "model_0001.pth"):
        _truncate(tmp_path / name)
    with pytest.raises(NoResumeCheckpointError) as error:
        ckpt.find_resume_checkpoint(8, 10)
    text = str(error.value)
    assert text.startswith("--resume cannot continue the run in {d}: {d}/last_checkpoint names "
                           "{d}/model_0003.pth, which does not exist, and no other checkpoint there can be resumed "
                           "from (model_0002.pth is a truncated zip checkpoint".format(d=tmp_path))
    assert "model_0000.pth is a truncated zip checkpoint" in text and "model_last_good" not in text
    assert "write the file name of an intact checkpoint of that folder into {}".format(
        tmp_path / "last_checkpoint") in text
    assert "`MODEL.WEIGHTS <file>` without --resume" in text and "delete {} to train from scratch".format(
        tmp_path / "last_checkpoint") in text


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, small_root):
    """A 2-epoch training SIGKILLed (its main process only: its loader worker lives on for a moment) right
    after its first checkpoint -> its folder, holding model_0000.pth and the killed run's train.lock."""
    out = tmp_path_factory.mktemp("killed") / "run"
    procs = []
    env = dict(os.environ, FASTREID_DATASETS=str(small_root), OMP_NUM_THREADS="1")
    try:
        proc = start_train_net(procs, out, *SHORT_RUN, "DATALOADER.NUM_WORKERS", "1", env=env)
        _wait_for(lambda: (out / "last_checkpoint").exists(), proc, "first checkpoint")
        os.kill(proc.pid, signal.SIGKILL)
        rc, log = _finish(proc)
        assert rc == -signal.SIGKILL
        assert (out / "last_checkpoint").read_text() == "model_0000.pth", log[-2000:]
        assert json.loads((out / "train.lock").read_text())["pid"] == proc.pid  # left behind, stale
        yield out, proc.pid
    finally:
        for p in procs:  # the loader worker, if it has not noticed yet that its parent is gone
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def resumed_pair(killed_run, small_root, tmp_path_factory):
    """The killed run resumed twice, at the same time: ``plain`` as it was left (its pointer names the intact
    model_0000.pth) and ``damaged``, a copy where a truncated model_final.pth is what the pointer names."""
    killed, _ = killed_run
    base = tmp_path_factory.mktemp("resumed")
    plain, damaged = base / "plain", base / "damaged"
    shutil.copytree(killed, plain)
    shutil.copytree(killed, damaged)
    data = (killed / "model_0000.pth").read_bytes()
    (damaged / "model_final.pth").write_bytes(data[: len(data) * 2 // 3])  # a save cut off, by another writer
    (damaged / "last_checkpoint").write_text("model_final.pth")
    env = dict(os.environ, FASTREID_DATASETS=str(small_root), OMP_NUM_THREADS="1")
    procs = []
    try:
        runs = {name: start_train_net(procs, folder, "--resume", *SHORT_RUN, "DATALOADER.NUM_WORKERS", "1", env=env)
                for name, folder in (("plain", plain), ("damaged", damaged))}
        yield {name: (folder,) + _finish(runs[name]) for name, folder in (("plain", plain), ("damaged", damaged))}
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.mark.heavy
def test_the_lock_of_a_sigkilled_run_does_not_block_its_resume(resumed_pair, killed_run):
    folder, rc, log = resumed_pair["plain"]
    assert rc == 0, log[-3000:]
    assert "Resuming at epoch 1 (iteration 9)" in log
    assert "is in use by another training" not in log
    assert (folder / "model_final.pth").exists()
    assert not (folder / "train.lock").exists()  # removed at the end of the run


def test_resume_over_a_truncated_checkpoint_continues_from_the_previous_one(resumed_pair):
    folder, rc, log = resumed_pair["damaged"]
    assert rc == 0, log[-3000:]
    assert ("--resume: {d}/last_checkpoint names {d}/model_final.pth, which is a truncated zip checkpoint"
            .format(d=folder)) in log, log[-3000:]
    assert ("Resuming from {d}/model_0000.pth instead, the newest intact checkpoint (written after epoch 0): "
            "epoch 1 (9 iterations) is trained again.".format(d=folder)) in log
    assert "WARNING: --resume: " in (folder / "log.txt").read_text()  # in the run's log too
    assert "Resuming at epoch 1 (iteration 9)" in log
    assert "Restored the random state of rank 0 from iteration 9" in log  # an exact resume, training_state too
    # the same weights, bit for bit, as the resume from model_0000.pth that the user could have chosen
    plain, rc, plain_log = resumed_pair["plain"]
    assert rc == 0, plain_log[-3000:]
    a, b = _weights(folder / "model_final.pth"), _weights(plain / "model_final.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], _weights(folder / "model_0000.pth")[k]) for k in a)  # epoch 1 did train


def test_resume_without_an_intact_checkpoint_says_how_to_choose_one(tmp_path, killed_run, env):
    killed, _ = killed_run
    out = tmp_path / "run"
    out.mkdir()
    data = (killed / "model_0000.pth").read_bytes()
    (out / "model_0000.pth").write_bytes(data[:1000])
    (out / "last_checkpoint").write_text("model_0001.pth")  # a file that is not there
    res = subprocess.run([sys.executable, TRAIN_NET, "--config-file", "projects/Demo.yml", "--resume", *SHORT_RUN,
                          "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True)
    assert res.returncode != 0
    assert ("NoResumeCheckpointError: --resume cannot continue the run in {d}: {d}/last_checkpoint names "
            "{d}/model_0001.pth, which does not exist, and no other checkpoint there can be resumed from "
            "(model_0000.pth is a truncated zip checkpoint (1,000 bytes)".format(d=out)) in res.stderr, \
        res.stderr[-3000:]
    assert "`MODEL.WEIGHTS <file>` without --resume" in res.stderr
    assert sorted(n for n in os.listdir(out) if n.endswith(".pth")) == ["model_0000.pth"]
    assert not (out / "train.lock").exists()


# --------------------------------------------------------------------------------------------------
# 4. one training per OUTPUT_DIR
# --------------------------------------------------------------------------------------------------
@pytest.mark.heavy
def test_a_second_training_into_a_running_output_dir_is_refused_at_once(tmp_path, env, launched):
    out = tmp_path / "run"
    first = start_train_net(launched, out, *SHORT_RUN, "DATALOADER.NUM_WORKERS", "0", env=env)
    log_txt = out / "log.txt"
    _wait_for(lambda: log_txt.exists() and "Full config saved to" in log_txt.read_text(), first, "its config copy")
    # paused while the others start: it holds its lock all the same, and cannot finish before they are done
    os.killpg(first.pid, signal.SIGSTOP)
    holder = json.loads((out / "train.lock").read_text())
    assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()

    second = start_train_net(launched, out, *SHORT_RUN, env=env)
    ranks = start_train_net(launched, out, "--num-gpus", "2", "--dist-url", "auto", *SHORT_RUN, "DATALOADER.NUM_WORKERS", "0",
                   "SEED", "7", env=env)
    evaluation = start_train_net(launched, out, "--eval-only", "TEST.IMS_PER_BATCH", "32", env=env)
    rc, log = _finish(second, timeout=120)
    took = time.time() - second.started
    assert rc != 0
    refusal = ("OutputDirInUseError: OUTPUT_DIR {} is in use by another training: pid {} on host {}, started {} ("
               .format(out, first.pid, holder["host"], holder["started"]))
    assert refusal in log, log[-3000:]
    assert "Use another OUTPUT_DIR, or wait until that training has ended." in log
    assert took < 60, took  # an interpreter start and the config checks: seconds, not a training

    rc, log = _finish(ranks, timeout=180)  # every process of a 2-process run stops
    assert rc != 0
    assert refusal in log, log[-3000:]  # rank 0's (torch's launcher shows the first process's error)
    assert "World size: 2" not in log  # neither process got to fastreid's set-up: rank 1 stopped too
    assert not (out / "log.txt.rank1").exists()

    rc, log = _finish(evaluation, timeout=300)
    assert rc == 0, log[-3000:]
    assert "| SynthReID" in log  # evaluated
    assert "this --eval-only run writes its log.txt and config.yaml to {}".format(out / "eval_only") in log
    assert (out / "eval_only" / "log.txt").exists()

    os.killpg(first.pid, signal.SIGCONT)
    rc, log = _finish(first)
    assert rc == 0, log[-3000:]
    assert (out / "model_final.pth").exists() and (out / "last_checkpoint").read_text() == "model_final.pth"
    # the first run's config: not the second's (NUM_WORKERS 1), the 2-process run's (SEED 7) or the evaluation's
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["DATALOADER"]["NUM_WORKERS"], config["SEED"], config["TEST"]["IMS_PER_BATCH"]) == (0, 0, 128)
    text = log_txt.read_text()
    assert text.count("Command line arguments") == text.count("Full config saved to") == 1  # its own only
    assert "eval_only=True" not in text and "in use" not in text
    assert not (out / "train.lock").exists()


def test_the_lock_is_released_with_the_process_and_shared_by_nothing_it_forks(tmp_path):
    from fastreid_ewth.reliability.lock import OutputDirInUseError, hold_output_dir, lock_holder, release_output_dir

    out = tmp_path / "run"
    ready, told = os.pipe()
    pid = os.fork()
    if pid == 0:  # the holder: takes the lock, then forks as a data loader does
        try:
            os.setsid()
            hold_output_dir(str(out))
            if os.fork() == 0:  # the "worker" outlives its parent for a while
                time.sleep(30)
                os._exit(0)
            os.write(told, b"held")
            time.sleep(60)
        finally:
            os._exit(0)
    try:
        assert os.read(ready, 4) == b"held"
        assert lock_holder(str(out))["pid"] == pid
        with pytest.raises(OutputDirInUseError, match="pid {} on host {}".format(pid, socket.gethostname())):
            hold_output_dir(str(out))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert lock_holder(str(out)) is None  # the forked child lives on, without the lock
        assert hold_output_dir(str(out)) is hold_output_dir(str(out))  # taken over; re-entrant
        assert json.loads((out / "train.lock").read_text())["pid"] == os.getpid()
        release_output_dir(str(out))
        assert os.listdir(out) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # the forked child
