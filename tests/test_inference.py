"""From a trained model to use: embedding files, tools/embed.py, offline evaluation, ONNX export."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastreid_ewth.engine import evaluate_checkpoint, load_cfg
from fastreid_ewth.engine.evaluate import load_trained_model
from fastreid_ewth.inference import Embeddings, load_embeddings, save_embeddings
from fastreid_ewth.inference.cli import embed_main, evaluate_main, export_main
from fastreid_ewth.inference.embed import folder_images, write_folder_embeddings, write_test_set_embeddings
from fastreid_ewth.inference.offline import evaluate_embeddings

from conftest import REPO, copy_synth_subset


@pytest.fixture(scope="module")
def trained(datasets_root, tmp_path_factory):
    """A small test set elsewhere (ReidFolder), and a checkpoint of the demo's model on it (a few SGD steps,
    so that its BN statistics and weights are not the initial ones)."""
    from fastreid.utils.events import EventStorage

    from fastreid_ewth.engine import EWTHTrainer

    root = tmp_path_factory.mktemp("inference")
    folder = str(root / "MyCams")
    expected = copy_synth_subset(datasets_root, folder)
    opts = ["DATASETS.NAMES", '("ReidFolder",)', "DATASETS.TESTS", '("ReidFolder",)', "DATASETS.FOLDER.ROOT",
            folder, "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "32",
            "SOLVER.IMS_PER_BATCH", "16"]
    cfg = load_cfg(str(REPO / "projects" / "Demo.yml"), opts + ["OUTPUT_DIR", str(root / "run")])
    cfg.defrost()
    cfg.MODEL.HEADS.NUM_CLASSES = 12
    cfg.freeze()
    model = EWTHTrainer.build_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    batch = next(iter(EWTHTrainer.build_train_loader(cfg)))
    with EventStorage():  # the model logs its accuracy there
        for _ in range(3):
            losses = model(batch)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    weights = str(root / "model_final.pth")
    torch.save({"model": model.state_dict()}, weights)
    return {"root": root, "folder": folder, "expected": expected, "opts": opts + ["MODEL.WEIGHTS", weights],
            "config": str(REPO / "projects" / "Demo.yml")}


def cfg_of(trained, *opts):
    return load_cfg(trained["config"], trained["opts"] + list(opts))


# ---------------------------------------------------------------------------------------------------------
# embedding files
# ---------------------------------------------------------------------------------------------------------
def test_embeddings_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    e = Embeddings(rng.normal(size=(5, 7)), np.arange(5), np.array([0, 1, 0, 2, 1]), ["a/1.jpg", "b", "c", "d", "é"])
    path = save_embeddings(str(tmp_path / "sub" / "e.npz"), e)
    back = load_embeddings(path)
    assert back.feats.dtype == np.float32 and back.pids.dtype == np.int64 and back.camids.dtype == np.int64
    for key in ("feats", "pids", "camids", "paths"):
        np.testing.assert_array_equal(getattr(back, key), getattr(e, key))
    assert list(back.paths) == ["a/1.jpg", "b", "c", "d", "é"] and back.labelled
    assert os.listdir(str(tmp_path / "sub")) == ["e.npz"]  # no temporary left


def test_bad_embedding_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="pids has shape \\(2,\\) but feats has 3 rows"):
        Embeddings(np.zeros((3, 2)), [1, 2], [0, 0, 0], ["a", "b", "c"])
    with pytest.raises(ValueError, match="1 of 2 feature rows hold NaN or inf"):
        Embeddings(np.array([[0.0, np.nan], [1, 2]]), [1, 2], [0, 0], ["a", "b"])
    with pytest.raises(ValueError, match="must end in .npz"):
        save_embeddings(str(tmp_path / "e.txt"), Embeddings(np.zeros((1, 2)), [1], [0], ["a"]))
    np.savez(str(tmp_path / "partial.npz"), feats=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"lacks the array\(s\) \['pids', 'camids', 'paths'\]"):
        load_embeddings(str(tmp_path / "partial.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot be read as .npz"):
        load_embeddings(str(tmp_path / "junk.npz"))
    with pytest.raises(FileNotFoundError, match="tools/embed.py"):
        load_embeddings(str(tmp_path / "none.npz"))


# ---------------------------------------------------------------------------------------------------------
# embed + evaluate offline == --eval-only
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded(trained):
    out = str(trained["root"] / "emb")
    query_file, gallery_file = write_test_set_embeddings(cfg_of(trained), out, progress=False)
    return load_embeddings(query_file), load_embeddings(gallery_file)


def test_embed_writes_the_test_set_in_order_with_its_labels(trained, embedded):
    query, gallery = embedded
    for part, split in ((query, "query"), (gallery, "gallery")):
        expected = trained["expected"][split]
        assert [os.path.basename(p) for p in part.paths] == [name for name, _, _ in expected]
        assert part.pids.tolist() == [pid for _, pid, _ in expected]
        assert part.camids.tolist() == [cam for _, _, cam in expected]
        assert part.feats.shape == (len(expected), 512)


@pytest.mark.parametrize("test_opts", [
    (),
    ("TEST.METRIC", "euclidean", "TEST.AQE.ENABLED", "True", "TEST.RERANK.ENABLED", "True", "TEST.ROC.ENABLED", "True"),
    ("TEST.TIES", "fastreid"),
])
def test_offline_evaluation_equals_eval_only_exactly(trained, embedded, test_opts):
    cfg = cfg_of(trained, *test_opts)
    online = evaluate_checkpoint(cfg)
    offline = evaluate_embeddings(cfg, *embedded)
    assert list(offline) == list(online)
    assert {k: float(v) for k, v in offline.items()} == {k: float(v) for k, v in online.items()}


def test_flip_test_embeddings_equal_eval_only_exactly(trained, tmp_path):
    cfg = cfg_of(trained, "TEST.FLIP.ENABLED", "True")
    query_file, gallery_file = write_test_set_embeddings(cfg, str(tmp_path), progress=False)
    offline = evaluate_embeddings(cfg, load_embeddings(query_file), load_embeddings(gallery_file))
    assert dict(offline) == dict(evaluate_checkpoint(cfg))


def test_evaluate_cli_prints_fastreids_table_and_writes_json(trained, embedded, tmp_path, capsys):
    args = ["--query", embedded[0].source, "--gallery", embedded[1].source, "--json", str(tmp_path / "r.json")]
    assert evaluate_main(args + ["--metric", "euclidean", "--name", "MyCams"]) == 0
    cfg = cfg_of(trained, "TEST.METRIC", "euclidean")
    expected = evaluate_embeddings(cfg, *embedded)
    assert json.loads((tmp_path / "r.json").read_text()) == pytest.approx({k: float(v) for k, v in expected.items()})
    out = capsys.readouterr().out
    assert "| MyCams " in out and "{:.2f}".format(expected["mAP"]) in out
    # the flags change the options: cosine (the default) differs from euclidean here
    assert evaluate_main(args) == 0
    assert json.loads((tmp_path / "r.json").read_text())["mAP"] == pytest.approx(
        float(evaluate_embeddings(load_cfg("", []), *embedded)["mAP"]))
    assert evaluate_main(args + ["--ties", "fastreid"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["mAP"] == pytest.approx(
        float(evaluate_embeddings(load_cfg("", ["TEST.TIES", "fastreid"]), *embedded)["mAP"]))


def test_evaluate_refuses_unlabelled_or_mismatched_embeddings(embedded, tmp_path, capsys):
    query, gallery = embedded
    unlabelled = Embeddings(query.feats, np.full(len(query), -1), query.camids, query.paths)
    save_embeddings(str(tmp_path / "u.npz"), unlabelled)
    small = Embeddings(gallery.feats[:, :10], gallery.pids, gallery.camids, gallery.paths)
    save_embeddings(str(tmp_path / "small.npz"), small)
    assert evaluate_main(["--query", str(tmp_path / "u.npz"), "--gallery", gallery.source,
                          "--json", str(tmp_path / "r.json")]) == 2
    assert "without identity or camera" in capsys.readouterr().err
    assert evaluate_main(["--query", query.source, "--gallery", str(tmp_path / "small.npz")]) == 2
    err = capsys.readouterr().err
    assert "query features are 512-d" in err and "gallery features 10-d" in err
    assert evaluate_main(["--query", query.source, "--gallery", gallery.source, "TEST.NOT_A_KEY", "1"]) == 2
    assert "TEST.NOT_A_KEY" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_embed_a_plain_folder(trained, embedded, tmp_path):
    folder = tmp_path / "photos"
    (folder / "day2").mkdir(parents=True)
    src = [p for p in embedded[0].paths[:3]]
    names = ["b.jpg", "0161_c1s1_x.jpg", "day2/a.jpg"]
    for path, name in zip(src, names):
        with open(path, "rb") as f, open(str(folder / name), "wb") as g:
            g.write(f.read())
    assert [(os.path.relpath(p, str(folder)), pid, cam) for p, pid, cam in folder_images(str(folder))] == [
        ("0161_c1s1_x.jpg", 161, 0), ("b.jpg", -1, -1), ("day2/a.jpg", -1, -1)]
    path = write_folder_embeddings(cfg_of(trained), str(folder), str(tmp_path / "out"), progress=False)
    assert os.path.basename(path) == "embeddings.npz"
    e = load_embeddings(path)
    assert not e.labelled and e.pids.tolist() == [161, -1, -1]
    # the same images give the test set's features (other batches: equal to float rounding)
    order = [1, 0, 2]
    np.testing.assert_allclose(e.feats, embedded[0].feats[order], rtol=0, atol=1e-5)


def test_embed_cli_and_its_bad_input(trained, tmp_path, capsys):
    out = tmp_path / "cli"
    assert embed_main(["--config-file", trained["config"], "--output", str(out), "--no-progress"]
                      + trained["opts"]) == 0
    assert sorted(os.listdir(str(out))) == ["gallery.npz", "query.npz"]
    capsys.readouterr()
    assert embed_main(["--config-file", trained["config"], "--output", str(tmp_path / "x"), "--images",
                       str(tmp_path / "nowhere")] + trained["opts"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert embed_main(["--config-file", trained["config"], "--output", str(tmp_path / "y")] + trained["opts"]
                      + ["MODEL.WEIGHTS", str(tmp_path / "none.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.heavy
def test_tools_run_from_a_checkout(trained, embedded):
    done = subprocess.run([sys.executable, str(REPO / "tools" / "evaluate.py"), "--query", embedded[0].source,
                           "--gallery", embedded[1].source], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Rank-1" in done.stdout and "mAP" in done.stdout
    for tool in ("embed.py", "export_onnx.py"):
        done = subprocess.run([sys.executable, str(REPO / "tools" / tool), "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and "--config-file" in done.stdout


# ---------------------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flip", [False, True])
def test_onnx_export_matches_pytorch_on_real_images(trained, tmp_path, capsys, flip):
    onnxruntime = pytest.importorskip("onnxruntime")

    opts = ["TEST.FLIP.ENABLED", str(flip)]
    output = str(tmp_path / "model.onnx")
    assert export_main(["--config-file", trained["config"], "--output", output] + trained["opts"] + opts) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("max abs diff ")
    assert float(line.split()[3]) <= 1e-4
    # the file's features of the test images are the embeddings tools/embed.py writes
    query_file, _ = write_test_set_embeddings(cfg_of(trained, *opts), str(tmp_path / "emb"), progress=False)
    query = load_embeddings(query_file)
    cfg, _ = load_trained_model(cfg_of(trained, *opts))
    from fastreid_ewth.inference.export import check_images

    images = check_images(cfg, count=len(query))
    session = onnxruntime.InferenceSession(output, providers=["CPUExecutionProvider"])
    features = session.run(["features"], {"images": images.numpy()})[0]  # all queries in one batch
    assert features.shape == query.feats.shape
    assert np.abs(features - query.feats).max() <= 1e-4


def test_onnx_export_refuses_an_unfaithful_or_failing_export(trained, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from fastreid_ewth.inference import export

    cfg = cfg_of(trained)
    output = tmp_path / "model.onnx"
    with pytest.raises(export.ExportError, match=r"differs from PyTorch by up to .* it is not written"):
        export.export_onnx(cfg, str(output), tolerance=1e-12, count=4)

    def broken(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::mystery' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(export.ExportError, match="aten::mystery.*cannot be exported"):
        export.export_onnx(cfg, str(output), count=4)
    assert not output.exists() and os.listdir(str(tmp_path)) == []
