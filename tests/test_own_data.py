"""Your own data from YAML alone: a Market1501-layout folder (ReidFolder) and list files (ReidList)."""
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from fastreid_ewth.data import build_dataset, build_test_set, build_train_set, require_split
from fastreid_ewth.data.own import FOLDER_SPLITS
from fastreid_ewth.engine import load_cfg
from fastreid_ewth.engine.setup import validate_run

from conftest import REPO, TRAIN_IDS, copy_synth_subset

@pytest.fixture(scope="module")
def my_cams(datasets_root, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("elsewhere") / "MyCams")
    return folder, copy_synth_subset(datasets_root, folder)


def folder_cfg(folder, *opts):
    opts = ["DATASETS.NAMES", '("ReidFolder",)', "DATASETS.TESTS", '("ReidFolder",)', "DATASETS.FOLDER.ROOT",
            folder] + list(opts)
    return load_cfg(str(REPO / "projects" / "Demo.yml"), opts)


def test_folder_reads_every_image_with_its_identity_and_camera(my_cams):
    folder, expected = my_cams
    data = build_dataset(folder_cfg(folder), "ReidFolder")
    for split, sub in FOLDER_SPLITS.items():
        items = getattr(data, split)
        assert [(os.path.basename(p), os.path.dirname(p)) for p, _, _ in items] == [
            (name, os.path.join(folder, sub)) for name, _, _ in expected[split]]
        if split == "train":  # training labels carry the dataset's name, as fastreid's readers do
            assert [(pid, cam) for _, pid, cam in items] == [
                ("reidfolder_{}".format(pid), "reidfolder_{}".format(cam)) for _, pid, cam in expected[split]]
        else:
            assert [(pid, cam) for _, pid, cam in items] == [(pid, cam) for _, pid, cam in expected[split]]


def test_list_files_give_the_folders_images(my_cams, tmp_path):
    folder, expected = my_cams
    lists = {}
    for split, sub in FOLDER_SPLITS.items():
        lists[split] = tmp_path / (split + ".txt")
        lines = ["# path, pid, camid", "path, pid, camid"] if split == "train" else []
        # relative paths from IMAGE_ROOT, commas and blanks both accepted
        lines += ["{}/{}{} {}".format(sub, name, "," if i % 2 else " ", pid) + ", {}".format(cam)
                  for i, (name, pid, cam) in enumerate(expected[split])]
        lists[split].write_text("\n".join(lines) + "\n\n")
    cfg = load_cfg("", ["DATASETS.NAMES", '("ReidList",)', "DATASETS.TESTS", '("ReidList",)',
                        "DATASETS.LIST.TRAIN", str(lists["train"]), "DATASETS.LIST.QUERY", str(lists["query"]),
                        "DATASETS.LIST.GALLERY", str(lists["gallery"]), "DATASETS.LIST.IMAGE_ROOT", folder])
    listed = build_dataset(cfg, "ReidList")
    from_folder = build_dataset(folder_cfg(folder), "ReidFolder")
    assert listed.query == from_folder.query and listed.gallery == from_folder.gallery
    assert [(p, pid.split("_")[1], cam.split("_")[1]) for p, pid, cam in listed.train] == [
        (p, pid.split("_")[1], cam.split("_")[1]) for p, pid, cam in from_folder.train]
    # the image sets the trainer's loaders get
    train = build_train_set(cfg)
    assert train.num_classes == len(TRAIN_IDS)
    test, num_query = build_test_set(cfg, "ReidList")
    assert num_query == len(expected["query"]) and len(test) == num_query + len(expected["gallery"])


def test_junk_is_skipped_distractors_kept_and_other_files_ignored(tmp_path):
    folder = tmp_path / "Shop"
    for sub in FOLDER_SPLITS.values():
        (folder / sub).mkdir(parents=True)
    image = Image.new("RGB", (32, 64), (90, 20, 200))
    for name in ("0003_c1s1_000001_00.jpg", "-1_c2s1_000001_00.jpg", "0000_c3s1_000001_00.png"):
        image.save(str(folder / "bounding_box_test" / name))
    (folder / "bounding_box_test" / "Thumbs.db").write_bytes(b"\0")
    (folder / "bounding_box_test" / ".hidden.jpg").write_bytes(b"\0")
    data = build_dataset(folder_cfg(str(folder)), "ReidFolder")
    assert [(os.path.basename(p), pid, cam) for p, pid, cam in data.gallery] == [
        ("0000_c3s1_000001_00.png", 0, 2), ("0003_c1s1_000001_00.jpg", 3, 0)]


@pytest.mark.parametrize("name", ["person_7.jpg", "0007_s1_000001.jpg", "0007_c0s1_000001_00.jpg", "x0007_c1.jpg"])
def test_a_name_out_of_the_layout_is_refused_naming_the_file(tmp_path, name):
    folder = tmp_path / "Bad"
    for sub in FOLDER_SPLITS.values():
        (folder / sub).mkdir(parents=True)
    image = Image.new("RGB", (32, 64))
    image.save(str(folder / "query" / "0001_c1s1_000001_00.jpg"))
    image.save(str(folder / "query" / name))
    with pytest.raises(ValueError) as error:
        build_dataset(folder_cfg(str(folder)), "ReidFolder")
    message = str(error.value)
    assert os.path.join(str(folder), "query", name) in message and "PID_cCAM" in message


def test_empty_or_missing_splits_are_refused_when_used(tmp_path, my_cams):
    folder = tmp_path / "TestOnly"
    shutil.copytree(os.path.join(my_cams[0], "query"), str(folder / "query"))
    (folder / "bounding_box_test").mkdir()
    cfg = folder_cfg(str(folder))
    data = build_dataset(cfg, "ReidFolder")
    assert len(data.query) == len(my_cams[1]["query"])  # a test-only folder reads
    with pytest.raises(ValueError, match=r"the train set of ReidFolder is empty \(there is no folder .*"
                                         r"bounding_box_train\)"):
        require_split(data, "ReidFolder", "train", "DATASETS.NAMES")
    with pytest.raises(ValueError, match=r"the gallery set of ReidFolder is empty \(.*bounding_box_test holds no "
                                         r"image named PID_cCAM"):
        build_test_set(cfg, "ReidFolder")


def test_bad_folder_or_list_settings_are_refused_before_the_run_writes_anything(tmp_path, my_cams):
    out = tmp_path / "out"
    cases = [
        (["DATASETS.FOLDER.ROOT", ""], ValueError, "ReidFolder needs DATASETS.FOLDER.ROOT"),
        (["DATASETS.FOLDER.ROOT", str(tmp_path / "nowhere")], FileNotFoundError, "is not a folder"),
    ]
    for opts, error, message in cases:
        cfg = load_cfg(str(REPO / "projects" / "Demo.yml"), ["DATASETS.NAMES", '("ReidFolder",)', "OUTPUT_DIR",
                                                              str(out)] + opts)
        with pytest.raises(error, match=message):
            validate_run(cfg)
    with pytest.raises(ValueError, match="ReidList needs list files"):
        validate_run(load_cfg("", ["DATASETS.NAMES", '("ReidList",)']))
    with pytest.raises(ValueError, match="dataset 'MyShop' is not registered.*ReidFolder"):
        validate_run(load_cfg("", ["DATASETS.NAMES", '("MyShop",)']))
    assert not out.exists()


@pytest.mark.parametrize("line, message", [
    ("a.jpg 1", "expected 3 fields"),
    ("a.jpg one 0", "pid and camid must be integers"),
    ("a.jpg 1 -2", "camid >= 0"),
    ("missing.jpg 1 0", r"image .*missing.jpg does not exist"),
])
def test_bad_list_lines_are_refused_naming_file_and_line(tmp_path, line, message):
    Image.new("RGB", (32, 64)).save(str(tmp_path / "a.jpg"))
    listing = tmp_path / "query.txt"
    listing.write_text("a.jpg 1 0\n{}\n".format(line))
    cfg = load_cfg("", ["DATASETS.LIST.QUERY", str(listing)])
    with pytest.raises((ValueError, FileNotFoundError), match=r"query.txt, line 2 .*" + message):
        build_dataset(cfg, "ReidList")


@pytest.mark.heavy
def test_a_copy_under_another_name_trains_and_evaluates_from_yaml_alone(my_cams, tmp_path):
    folder, expected = my_cams
    config = tmp_path / "my_cams.yml"
    out = tmp_path / "run"
    config.write_text("\n".join([
        "_BASE_: {}".format(REPO / "projects" / "Demo.yml"),
        "DATASETS:", "  NAMES: (\"ReidFolder\",)", "  TESTS: (\"ReidFolder\",)", "  FOLDER:",
        "    ROOT: {}".format(folder),
        "SOLVER:", "  MAX_EPOCH: 2", "  STEPS: [1]", "  WARMUP_EPOCHS: 0", "  IMS_PER_BATCH: 32",
        "  CHECKPOINT_PERIOD: 2",
        "TEST:", "  EVAL_PERIOD: 2",
        "DATALOADER:", "  NUM_WORKERS: 0",
        "OUTPUT_DIR: {}".format(out), ""]))
    train = subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(config)],
                           capture_output=True, text=True, cwd=str(tmp_path))
    assert train.returncode == 0, train.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "Evaluation results for ReidFolder" in log
    assert "| train    | {:<7} | {:<10}".format(len(TRAIN_IDS), len(expected["train"])) in log
    assert (out / "model_final.pth").is_file()
    evaluate = subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(config),
                               "--eval-only", "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR",
                               str(tmp_path / "eval")], capture_output=True, text=True, cwd=str(tmp_path))
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    # the last evaluation of the run and --eval-only of its final weights print the same table row
    row = [line for line in log.splitlines() if line.startswith("| ReidFolder")][-1]
    assert row in evaluate.stdout
