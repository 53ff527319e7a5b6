"""SynthReID: layout, determinism, confusable pairs, atomic generation and reuse."""
import collections
import os
import re
import threading

import numpy as np
import pytest

from fastreid.data.datasets import DATASET_REGISTRY

from fastreid_ewth.data import synth_reid
from fastreid_ewth.data.synth_reid import MARKER, SYNTH_LAYOUT, ensure_synth_reid


@pytest.fixture(scope="module")
def synth(datasets_root):
    return DATASET_REGISTRY.get("SynthReID")(root=datasets_root)


def test_registered_and_market_layout(synth, datasets_root):
    assert DATASET_REGISTRY.get("SynthReID") is synth_reid.SynthReID
    for sub in SYNTH_LAYOUT:
        names = os.listdir(os.path.join(datasets_root, "SynthReID", sub))
        assert names and all(re.match(r"^\d{4}_c[1-6]s1_\d{6}_\d{2}\.jpg$", n) for n in names)


def test_sizes_cameras_and_splits(synth):
    train_ids = {pid for _, pid, _ in synth.train}
    test_ids = {pid for _, pid, _ in synth.query} | {pid for _, pid, _ in synth.gallery}
    assert len(train_ids) >= 100
    assert len({cam for _, _, cam in synth.train}) >= 4
    assert len({cam for _, _, cam in synth.gallery}) >= 4
    # training and test identities are disjoint (train labels carry the dataset prefix)
    assert not {int(p.split("_")[1]) for p in train_ids} & test_ids
    # every query has a gallery image of its identity from another camera
    gallery = collections.defaultdict(set)
    for _, pid, cam in synth.gallery:
        gallery[pid].add(cam)
    for _, pid, cam in synth.query:
        assert gallery[pid] - {cam}, (pid, cam)


def test_confusable_pairs_differ_in_one_attribute():
    ids = synth_reid._identities(0, 1, 20)
    keys = [k for k in ids[1]]
    for a in range(1, 21, 2):
        diff = [k for k in keys if not np.array_equal(np.asarray(ids[a][k]), np.asarray(ids[a + 1][k]))]
        # one changed attribute ("hair" changes its colour and length together)
        assert 1 <= len(diff) <= 2 and (len(diff) == 1 or set(diff) == {"hair", "long_hair"}), diff
    # identities of different pairs differ in most attributes
    diff = [k for k in keys if not np.array_equal(np.asarray(ids[1][k]), np.asarray(ids[3][k]))]
    assert len(diff) >= 6


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, datasets_root, monkeypatch):
    # every 7th image of the dataset (each image has its own random stream, so a subset renders the same bytes)
    full_plan = synth_reid._plan
    monkeypatch.setattr(synth_reid, "_plan", lambda seed: full_plan(seed)[::7])
    a = ensure_synth_reid(str(tmp_path), seed=0, name="A")
    reference = os.path.join(datasets_root, "SynthReID")
    compared = 0
    for sub in SYNTH_LAYOUT:
        for name in sorted(os.listdir(os.path.join(a, sub))):
            with open(os.path.join(a, sub, name), "rb") as f, open(os.path.join(reference, sub, name), "rb") as g:
                assert f.read() == g.read(), (sub, name)
            compared += 1
    assert compared == len(full_plan(0)[::7]) > 100
    arr0 = synth_reid._render(synth_reid._identity(np.random.default_rng([1])), synth_reid._camera(1, 0),
                              np.random.default_rng([5]))
    arr1 = synth_reid._render(synth_reid._identity(np.random.default_rng([1])), synth_reid._camera(1, 0),
                              np.random.default_rng([5]))
    arr2 = synth_reid._render(synth_reid._identity(np.random.default_rng([1])), synth_reid._camera(2, 0),
                              np.random.default_rng([5]))
    assert np.array_equal(arr0, arr1) and not np.array_equal(arr0, arr2)


def test_crash_during_generation_leaves_nothing_then_regenerates(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_encode = synth_reid._encode

    def failing_encode(arr):
        calls["n"] += 1
        if calls["n"] == 50:
            raise KeyboardInterrupt("simulated crash")
        return real_encode(arr)

    full_plan = synth_reid._plan
    monkeypatch.setattr(synth_reid, "_plan", lambda seed: full_plan(seed)[:120])  # a small dataset will do
    monkeypatch.setattr(synth_reid, "_encode", failing_encode)
    with pytest.raises(KeyboardInterrupt):
        ensure_synth_reid(str(tmp_path), seed=3, name="S")
    assert os.listdir(tmp_path) == []  # no half dataset, no temporary folder

    monkeypatch.setattr(synth_reid, "_encode", real_encode)
    target = ensure_synth_reid(str(tmp_path), seed=3, name="S")
    assert os.path.isfile(os.path.join(target, MARKER))
    assert os.listdir(tmp_path) == ["S"]

    # a second run reuses the folder: nothing is rendered again
    monkeypatch.setattr(synth_reid, "_render", lambda *a: (_ for _ in ()).throw(AssertionError("regenerated")))
    assert ensure_synth_reid(str(tmp_path), seed=3, name="S") == target


def test_incomplete_or_foreign_folder_is_refused(tmp_path):
    (tmp_path / "S").mkdir()
    with pytest.raises(RuntimeError, match="Delete it"):
        ensure_synth_reid(str(tmp_path), seed=0, name="S")
    (tmp_path / "S" / MARKER).write_text("SynthReID generator 0 seed 9\n")
    with pytest.raises(RuntimeError, match="another generator version or seed"):
        ensure_synth_reid(str(tmp_path), seed=0, name="S")


def _small_plan(monkeypatch, images=12):
    real_plan = synth_reid._plan
    monkeypatch.setattr(synth_reid, "_plan", lambda seed: real_plan(seed)[:images])


def test_two_processes_generating_at_once_end_with_one_complete_folder(tmp_path, monkeypatch):
    _small_plan(monkeypatch)
    real_generate = synth_reid.generate_synth_reid
    both_generated = threading.Barrier(2, timeout=60)

    def generate_then_wait(folder, seed=0):
        count = real_generate(folder, seed)
        both_generated.wait()  # both have a full temporary copy before either renames it into place
        return count

    monkeypatch.setattr(synth_reid, "generate_synth_reid", generate_then_wait)
    results, errors = [], []

    def worker():
        try:
            results.append(ensure_synth_reid(str(tmp_path), seed=1, name="S"))
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [str(tmp_path / "S")] * 2
    assert os.listdir(tmp_path) == ["S"]  # the loser's temporary copy is gone
    assert (tmp_path / "S" / MARKER).read_text() == synth_reid._marker_text(1)
    assert not [n for n in os.listdir(tmp_path / "S") if n.startswith(".")]  # no temporary marker file
    assert sum(len(os.listdir(tmp_path / "S" / sub)) for sub in SYNTH_LAYOUT) == 12


def test_a_failed_marker_write_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    _small_plan(monkeypatch)
    real_atomic_write = synth_reid.atomic_write

    def disk_full(path, write):
        def half(f):
            f.write(b"SynthReID gen")
            raise OSError(28, "No space left on device")
        return real_atomic_write(path, half)

    monkeypatch.setattr(synth_reid, "atomic_write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        ensure_synth_reid(str(tmp_path), seed=1, name="S")
    assert os.listdir(tmp_path) == []
