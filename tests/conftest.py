import logging
import os
import pathlib
import signal
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN_NET = str(REPO / "tools" / "train_net.py")

# fastreid reads FASTREID_DATASETS when its data module is imported: fix it before anything imports it.
# SynthReID is generated there once (a few seconds) and reused by later runs.
os.environ.setdefault("FASTREID_DATASETS", str(REPO / "datasets"))

import pytest  # noqa: E402

import fastreid_ewth  # noqa: E402,F401


@pytest.fixture(scope="session")
def datasets_root():
    from fastreid_ewth.data import ensure_synth_reid

    root = os.environ["FASTREID_DATASETS"]
    ensure_synth_reid(root)
    return root


@pytest.fixture
def python():
    return sys.executable


if int(pytest.__version__.split(".")[0]) < 9:
    class _ToCaplog(logging.Handler):
        """Hands a record to the ``caplog`` handler of the test phase that is running when it is emitted."""

        def __init__(self, caplog):
            super().__init__()
            self._caplog = caplog

        def emit(self, record):
            handler = self._caplog.handler
            if record.levelno >= handler.level:
                handler.handle(record)

    @pytest.fixture
    def caplog(caplog):
        """``caplog`` that also sees loggers that do not propagate to the root, as pytest >= 9 does by itself.

        fastreid's ``setup_logger`` (called by ``DefaultTrainer``, so by any earlier test that builds one)
        sets ``propagate = False`` on the ``fastreid`` logger; pytest < 9 — the newest for Python 3.9, which
        ``make test-oldest`` runs — listens on the root logger only, so ``caplog`` would see none of
        fastreid's records in the tests that run after it.
        """
        forward = _ToCaplog(caplog)
        loggers = [lg for lg in logging.Logger.manager.loggerDict.values()
                   if isinstance(lg, logging.Logger) and not lg.propagate]
        for lg in loggers:
            lg.addHandler(forward)
        try:
            yield caplog
        finally:
            for lg in loggers:
                lg.removeHandler(forward)


def synth_train_batch(cfg):
    """One P×K = 2×4 SynthReID training batch at 64×32 drawn as ``cfg``'s recipe draws it ->
    ``(batch, number of training identities)`` (the models are the configs' own, the images smaller)."""
    from fastreid.data import build_reid_train_loader

    cfg = cfg.clone()
    cfg.merge_from_list(["DATASETS.NAMES", ("SynthReID",), "SOLVER.IMS_PER_BATCH", 8, "DATALOADER.NUM_WORKERS", 0,
                         "INPUT.SIZE_TRAIN", [64, 32]])
    loader = build_reid_train_loader(cfg)
    return next(iter(loader)), loader.dataset.num_classes


def stock_baseline_cfg(output_dir, **overrides):
    """A small fastreid stock ``Baseline`` (ResNet-18, CE + triplet) on SynthReID, for CPU tests."""
    from fastreid.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu",
        "MODEL.BACKBONE.DEPTH", "18x",
        "MODEL.BACKBONE.FEAT_DIM", 512,
        "MODEL.BACKBONE.PRETRAIN", False,
        "MODEL.LOSSES.NAME", ("CrossEntropyLoss", "TripletLoss"),
        "MODEL.LOSSES.TRI.HARD_MINING", True,
        "INPUT.SIZE_TRAIN", [64, 32],
        "INPUT.SIZE_TEST", [64, 32],
        "INPUT.REA.ENABLED", False,
        "DATASETS.NAMES", ("SynthReID",),
        "DATASETS.TESTS", ("SynthReID",),
        "DATALOADER.SAMPLER_TRAIN", "NaiveIdentitySampler",
        "DATALOADER.NUM_INSTANCE", 4,
        "DATALOADER.NUM_WORKERS", 0,
        "SOLVER.OPT", "Adam",
        "SOLVER.BASE_LR", 3.5e-4,
        "SOLVER.IMS_PER_BATCH", 32,
        "SOLVER.MAX_EPOCH", 1,
        "SOLVER.WARMUP_ITERS", 0,
        "TEST.IMS_PER_BATCH", 128,
        "OUTPUT_DIR", str(output_dir),
    ])
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


# a few identities of SynthReID (its training and test identities), for tests that copy it elsewhere
TRAIN_IDS, TEST_IDS = range(1, 13), range(161, 171)


def copy_synth_subset(datasets_root, target):
    """Copy TRAIN_IDS / TEST_IDS of SynthReID, in its Market1501 layout, to folder ``target`` (created);
    returns ``{split: [(file name, pid, camid)]}`` in file-name order."""
    import shutil

    from fastreid_ewth.data.own import FOLDER_SPLITS

    source = os.path.join(datasets_root, "SynthReID")
    expected = {}
    for split, sub in FOLDER_SPLITS.items():
        os.makedirs(os.path.join(target, sub))
        ids = TRAIN_IDS if split == "train" else TEST_IDS
        expected[split] = []
        for name in sorted(os.listdir(os.path.join(source, sub))):
            pid = int(name[:4])
            if pid in ids:
                shutil.copy(os.path.join(source, sub, name), os.path.join(target, sub, name))
                expected[split].append((name, pid, int(name[6]) - 1))  # "PPPP_cC...": camera C counted from 1
    return expected


@pytest.fixture
def launched():
    """Processes started by ``start_train_net``; whatever still runs at the end is killed with its children."""
    procs = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_train_net(launched, out, *args, env):
    """Start tools/train_net.py on projects/Demo.yml in its own process group, output to ``<out>.<n>.log``
    (a file, not a pipe: nobody reads a pipe while the run goes on); returns the process, with ``log`` and
    ``started`` (its start time) set."""
    cmd = [sys.executable, TRAIN_NET, "--config-file", "projects/Demo.yml", *args, "OUTPUT_DIR", str(out)]
    log = "{}.{}.log".format(out, len(launched))
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    proc.started = time.time()
    launched.append(proc)
    return proc


#: the SynthReID slice of ``small_root``: 151 training images (9 steps of 16 per epoch), 24 query and 80
#: gallery images
SLICE_TRAIN_IDS, SLICE_TEST_IDS = 16, 12


@pytest.fixture(scope="module")
def small_root(tmp_path_factory, datasets_root):
    """A $FASTREID_DATASETS holding a SynthReID slice (symlinks): its first SLICE_TRAIN_IDS training and
    SLICE_TEST_IDS test identities, for short trainings in subprocesses."""
    source = os.path.join(datasets_root, "SynthReID")
    root = tmp_path_factory.mktemp("synth_slice")
    target = root / "SynthReID"
    with open(os.path.join(source, "SYNTHREID_COMPLETE")) as f:
        marker = f.read()
    for split, count in (("bounding_box_train", SLICE_TRAIN_IDS), ("query", SLICE_TEST_IDS),
                         ("bounding_box_test", SLICE_TEST_IDS)):
        names = sorted(os.listdir(os.path.join(source, split)))
        keep = sorted({n[:4] for n in names})[:count]
        (target / split).mkdir(parents=True)
        for n in names:
            if n[:4] in keep:
                os.symlink(os.path.join(source, split, n), target / split / n)
    (target / "SYNTHREID_COMPLETE").write_text(marker)
    return root
