"""Setting up a run: its config, its checks, its device and its logs, before anything is trained.

``setup_cfg`` builds the frozen config of a run from fastreid-style command-line arguments, checks it and
its inputs with ``validate_run`` *before* fastreid's ``default_setup`` creates ``OUTPUT_DIR`` (so a rejected
run leaves nothing behind), then does fastreid's set-up and seeds the run. Every check raises an error that
names the bad value and says how to fix it. A training then locks ``OUTPUT_DIR`` (``reliability.lock``)
before fastreid writes anything there, so a second training into the same folder is refused instead of
overwriting the first one's files. ``resolve_device`` and ``log_to_output_dir`` make a config run on this
machine and send the plugin's log records where fastreid's go; the trainer calls them too, for users who
build it from their own code.
"""
import ast
import logging
import os
import sys

import torch

from fastreid.config import get_cfg
from fastreid.engine import default_setup
from fastreid.utils import comm
from fastreid.utils.env import seed_all_rng

from .. import compat
from ..config import add_ewth_config, check_config_values
from ..data import build_dataset, named_by_config, require_split
from ..files import EVAL_ONLY_DIR, LOG_TXT, MODEL_FINAL
from ..modeling.registry import check_loss_configs, loss_entry
from ..reliability.checkpoint import check_checkpoint_file
from ..reliability.lock import OutputDirInUseError, hold_output_dir, lock_holder, release_output_dir

logger = logging.getLogger(__name__)

__all__ = ["load_cfg", "setup_cfg", "validate_run", "resolve_device", "log_to_output_dir", "check_identity_sampler",
           "FASTREID_LOSSES", "DATASET_LAYOUTS", "IDENTITY_SAMPLERS"]

IDENTITY_SAMPLERS = ("NaiveIdentitySampler", "BalancedIdentitySampler", "SetReWeightSampler")

# what fastreid's own Baseline computes; it silently ignores any other name
FASTREID_LOSSES = ("CrossEntropyLoss", "TripletLoss", "CircleLoss", "Cosface")

# where fastreid's readers look under $FASTREID_DATASETS
DATASET_LAYOUTS = {
    "Market1501": "Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}/*.jpg",
    "DukeMTMC": "DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}/*.jpg",
    "MSMT17": "MSMT17_V2/{mask_train_v2,mask_test_v2,list_train.txt,list_val.txt,list_query.txt,list_gallery.txt}",
    "CUHK03": "cuhk03/cuhk03_release/cuhk-03.mat (+ the splits fastreid derives from it)",
}



def validate_run(cfg, world_size=1, eval_only=False):
    """Raise ``ValueError`` / ``FileNotFoundError`` for the first bad input of the run ``cfg`` describes."""
    check_config_values(cfg)  # every value in its range (docs/config.md), all refused values at once
    _check_device(cfg.MODEL.DEVICE)
    _check_losses(cfg)
    _check_weights_path(cfg.MODEL.WEIGHTS)
    _check_output_dir(cfg.OUTPUT_DIR)
    if not eval_only:  # --eval-only builds the model without the ImageNet weights (load_trained_model)
        _check_pretrain_path(cfg.MODEL.BACKBONE)
        check_identity_sampler(cfg, world_size)
        for name in cfg.DATASETS.NAMES:
            require_split(_load_dataset(cfg, name), name, "train", "DATASETS.NAMES")
    for name in cfg.DATASETS.TESTS:
        data = _load_dataset(cfg, name)
        for split in ("query", "gallery"):
            require_split(data, name, split, "DATASETS.TESTS")


def _check_device(device):
    try:
        torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError("MODEL.DEVICE {!r} is not a device: use 'cuda', 'cuda:1' or 'cpu' (without CUDA, 'cuda' "
                         "falls back to 'cpu' with a warning)".format(device)) from None


def _check_losses(cfg):
    arch = cfg.MODEL.META_ARCHITECTURE
    names = tuple(cfg.MODEL.LOSSES.NAME)
    if arch == "Baseline":
        unknown = [n for n in names if n not in FASTREID_LOSSES]
        if unknown:
            raise ValueError("MODEL.LOSSES.NAME {}: fastreid's Baseline computes only {} and silently ignores {}; "
                             "set MODEL.META_ARCHITECTURE EWTHBaseline to train any registered loss".format(
                                 names, ", ".join(FASTREID_LOSSES), unknown))
    elif arch == "EWTHBaseline":  # another project's meta-architecture checks its own
        check_loss_configs(cfg)  # names registered, their config nodes valid


def _check_weights_path(weights):
    if weights:
        check_checkpoint_file(weights, "MODEL.WEIGHTS", "Pass the checkpoint of a finished run, e.g. "
                              "`MODEL.WEIGHTS <OUTPUT_DIR>/{}`, or leave it empty.".format(MODEL_FINAL))


def _check_pretrain_path(backbone):
    # fastreid's backbones read PRETRAIN_PATH only with PRETRAIN True (else they start from random weights),
    # and download ImageNet weights when it is empty
    if backbone.PRETRAIN and backbone.PRETRAIN_PATH:
        check_checkpoint_file(backbone.PRETRAIN_PATH, "MODEL.BACKBONE.PRETRAIN_PATH",
                              "Pass ImageNet weights saved by torch.save (e.g. torchvision's resnet50-19c8e357.pth), "
                              "leave it empty to download them, or train from scratch with "
                              "`MODEL.BACKBONE.PRETRAIN False`.")


def _check_output_dir(output_dir):
    """Refuse an OUTPUT_DIR that cannot hold the run's files, before anything is written: fastreid would fail
    only after set-up (or halfway, at the first checkpoint) with a bare OSError."""
    if not output_dir:  # fastreid then writes nothing
        return
    fix = "pass an OUTPUT_DIR this user can create and write, e.g. `OUTPUT_DIR logs/my_run`."
    path = os.path.abspath(output_dir)
    if os.path.islink(path) and not os.path.exists(path):
        raise ValueError("OUTPUT_DIR {!r} is a broken symbolic link (to {!r}): fix the link, or {}".format(
            output_dir, os.readlink(path), fix))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError("OUTPUT_DIR {!r} is a file, not a folder: the run writes its checkpoints and logs into "
                             "a folder of that name. Move the file away, or {}".format(output_dir, fix))
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError("OUTPUT_DIR {!r} cannot be written (no write permission for this user, or a read-only "
                             "file system): change its permissions, or {}".format(output_dir, fix))
        return
    # the nearest folder that exists decides whether the rest can be created
    parent = os.path.dirname(path)
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError("OUTPUT_DIR {!r} cannot be created: {!r} is a file, not a folder; {}".format(
            output_dir, parent, fix))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError("OUTPUT_DIR {!r} cannot be created: no write permission in {!r} for this user (or a "
                         "read-only file system); {}".format(output_dir, parent, fix))


def _load_dataset(cfg, name):
    try:
        return build_dataset(cfg, name)
    except (RuntimeError, FileNotFoundError) as e:
        if named_by_config(name):  # its errors name the config key and the path already
            raise
        layout = DATASET_LAYOUTS.get(name, "the folder layout its fastreid reader expects")
        raise FileNotFoundError(
            "dataset {} not found: {}. Datasets are read from $FASTREID_DATASETS (now {!r}; default 'datasets'), "
            "laid out as $FASTREID_DATASETS/{}. Set FASTREID_DATASETS to the folder that holds it.".format(
                name, e, compat.datasets_root(), layout)) from None


def check_identity_sampler(cfg, world_size=1):
    """Raise ``ValueError`` naming the keys to change when the batch cannot hold P×K identities.

    Needed when a metric loss is trained: every anchor needs another image of its identity (K >= 2) and
    another identity (P >= 2) in its process's batch, and the batch must be P×K exactly.
    """
    names = tuple(cfg.MODEL.LOSSES.NAME)
    if not any(_compares_in_batch(n) for n in names):
        return
    sampler = cfg.DATALOADER.SAMPLER_TRAIN
    k = cfg.DATALOADER.NUM_INSTANCE
    total = cfg.SOLVER.IMS_PER_BATCH
    if sampler not in IDENTITY_SAMPLERS:
        raise ValueError("DATALOADER.SAMPLER_TRAIN is {!r}, but the metric loss in MODEL.LOSSES.NAME {} needs "
                         "P identities × K images per batch: use one of {}".format(sampler, names, IDENTITY_SAMPLERS))
    if k < 2:
        raise ValueError("DATALOADER.NUM_INSTANCE is {}: the metric loss needs K >= 2 images per identity in a "
                         "batch (the paper uses 4)".format(k))
    if total % world_size:
        raise ValueError("SOLVER.IMS_PER_BATCH {} cannot be split evenly over {} processes".format(total, world_size))
    per_process = total // world_size
    if per_process % k:
        raise ValueError("SOLVER.IMS_PER_BATCH {} gives {} images per process, not a multiple of "
                         "DATALOADER.NUM_INSTANCE {}: change one of them (e.g. 64 and 4)".format(total, per_process, k))
    if per_process // k < 2:
        raise ValueError("SOLVER.IMS_PER_BATCH {} over {} process(es) with DATALOADER.NUM_INSTANCE {} gives {} "
                         "identity per batch; the metric loss needs >= 2: raise SOLVER.IMS_PER_BATCH or lower "
                         "DATALOADER.NUM_INSTANCE".format(total, world_size, k, per_process // k))


def _compares_in_batch(name):
    """Whether loss ``name`` compares the batch's images with each other (the entry's ``identity_batches``)."""
    try:  # fastreid's own losses are entries too, so this holds under fastreid's Baseline as well
        return loss_entry(name).identity_batches
    except ValueError:  # not registered: refused by _check_losses
        return False


def resolve_device(cfg):
    """Make ``cfg`` runnable on this machine, in place: CUDA -> CPU and AMP off when CUDA is absent.

    Returns ``cfg``. Logs every change so the user sees why the run differs from the file.
    """
    frozen = cfg.is_frozen()
    cfg.defrost()
    device = str(cfg.MODEL.DEVICE)
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is %r but CUDA is not available: running on cpu.", device)
        cfg.MODEL.DEVICE = "cpu"
    if cfg.SOLVER.AMP.ENABLED and not str(cfg.MODEL.DEVICE).startswith("cuda"):
        logger.warning("SOLVER.AMP.ENABLED is True but the model runs on %s: AMP switched off "
                       "(fastreid's AMP needs CUDA).", cfg.MODEL.DEVICE)
        cfg.SOLVER.AMP.ENABLED = False
    if frozen:
        cfg.freeze()
    return cfg


def log_to_output_dir(output_dir):
    """Send fastreid_ewth's log records where fastreid's go, keeping warnings on stderr as before.

    fastreid's ``default_setup`` configures only the ``fastreid`` logger; without this, the plugin's INFO
    records (resuming, restored random states) would be dropped and its warnings would reach stderr only.
    INFO goes to stdout on the main process, WARNING and above to stderr, everything to ``log.txt``
    (``log.txt.rankN`` on other processes), as fastreid names its files.
    """
    plugin = logging.getLogger("fastreid_ewth")
    if getattr(plugin, "_ewth_configured", False):
        return
    plugin.setLevel(logging.INFO)
    # the format of fastreid's log.txt
    formatter = logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s", datefmt="%m/%d %H:%M:%S")
    rank = comm.get_rank()
    handlers = [logging.StreamHandler(sys.stderr)]
    handlers[0].setLevel(logging.WARNING)
    if rank == 0:
        info = logging.StreamHandler(sys.stdout)
        info.addFilter(lambda record: record.levelno < logging.WARNING)
        handlers.append(info)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        name = LOG_TXT if rank == 0 else "{}.rank{}".format(LOG_TXT, rank)
        handlers.append(logging.FileHandler(os.path.join(output_dir, name)))
    for h in handlers:
        h.setFormatter(formatter)
        plugin.addHandler(h)
    plugin._ewth_configured = True


def load_cfg(config_file, opts=()):
    """fastreid's config with this package's keys, merged from ``config_file`` (may be empty) and the
    ``KEY VALUE`` list ``opts``, frozen. Nothing is checked or written (see :func:`setup_cfg`)."""
    cfg = get_cfg()
    add_ewth_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError("--config-file {!r} does not exist; pass a YAML config, e.g. "
                                    "projects/Demo.yml".format(config_file))
        cfg.merge_from_file(config_file)
    if len(opts or ()) % 2:
        raise ValueError("config overrides come in KEY VALUE pairs; got an odd number: {}".format(list(opts)))
    try:
        cfg.merge_from_list(_ints_as_floats(cfg, list(opts or [])))
    except AssertionError as e:  # yacs's way of refusing a key the config does not have
        raise ValueError("{} (in the KEY VALUE overrides); see the config's keys in the YAML files of "
                         "configs/".format(e)) from None
    except ValueError as e:
        if "Type mismatch" not in str(e):
            raise
        raise ValueError("{} (in the KEY VALUE overrides): write the value in the type of the key's default, e.g. "
                         "an integer without a decimal point, a list as '[1, 2]' (docs/config.md lists the "
                         "keys)".format(e)) from None
    cfg.freeze()
    return cfg


def _ints_as_floats(cfg, opts):
    """``opts`` with an integer value written as a float where the key holds a float (``SOLVER.BASE_LR 1``):
    yacs refuses an int for a float key with a type-mismatch error, though the number is what was meant."""
    out = list(opts)
    for i in range(0, len(out) - 1, 2):
        node, key = cfg, str(out[i])
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, float) or not isinstance(out[i + 1], str):
            continue
        try:
            value = ast.literal_eval(out[i + 1])
        except (ValueError, SyntaxError):
            continue  # yacs keeps it as a string and reports the mismatch
        if isinstance(value, int) and not isinstance(value, bool):
            out[i + 1] = repr(float(value))
    return out


def setup_cfg(args):
    """Build the frozen config of a run from fastreid-style ``args`` and do fastreid's default set-up.

    ``args`` has ``config_file`` and ``opts`` (trailing ``KEY VALUE`` overrides), as parsed by
    ``fastreid.engine.default_argument_parser``.

    A training (not ``args.eval_only``) holds the lock on ``OUTPUT_DIR`` from before fastreid's set-up writes
    there until ``release_output_dir(cfg.OUTPUT_DIR)`` or the end of its process; when another training holds
    it, every process raises ``OutputDirInUseError`` naming the holder, and nothing is written. An
    ``--eval-only`` run takes no lock; while a training holds ``OUTPUT_DIR`` it writes its log and config copy
    to ``OUTPUT_DIR/eval_only`` instead (the returned config says so), leaving the training's files alone.
    """
    cfg = load_cfg(args.config_file, args.opts)
    # reject bad input before default_setup creates OUTPUT_DIR and writes its log and config copy
    world_size = getattr(args, "num_gpus", 1) * getattr(args, "num_machines", 1)
    eval_only = getattr(args, "eval_only", False)
    validate_run(cfg, world_size=world_size, eval_only=eval_only)
    cfg, note = _claim_output_dir(cfg, eval_only)
    try:
        default_setup(cfg, args)
    except BaseException:
        release_output_dir(cfg.OUTPUT_DIR)
        raise
    log_to_output_dir(cfg.OUTPUT_DIR)
    if note:
        logger.warning(note)
    if cfg.SEED >= 0:
        # fastreid seeds every run at random; a fixed SEED makes runs repeatable (one stream per rank)
        seed_all_rng(cfg.SEED + comm.get_rank())
    return cfg


def _claim_output_dir(cfg, eval_only):
    """Lock ``OUTPUT_DIR`` for a training; move an ``--eval-only`` run's files out of a training's folder.

    Returns ``(cfg, warning or None)``. Decided by the main process (the one that holds the lock and writes
    the folder's files) and shared with the others, so that every process of the run stops, or goes on,
    together.
    """
    output_dir = cfg.OUTPUT_DIR
    if not output_dir:
        return cfg, None
    outcome, error = None, None
    if comm.is_main_process():
        try:
            if eval_only:
                outcome = lock_holder(output_dir)
            else:
                hold_output_dir(output_dir)
        except Exception as e:  # told to the others too: they would wait for the outcome forever
            outcome, error = str(e), e
    if comm.get_world_size() > 1:
        outcome = comm.all_gather(outcome)[0]
    if error is not None:
        raise error
    if not eval_only:
        if outcome is not None:
            raise OutputDirInUseError(outcome)
        return cfg, None
    if outcome is None:
        return cfg, None
    # evaluating while a training runs in the folder is fine (the checkpoints are written atomically), but
    # default_setup would replace the training's config.yaml and append the evaluation to its log.txt, where
    # the report looks for the training's last results
    cfg = cfg.clone()
    cfg.defrost()
    cfg.OUTPUT_DIR = os.path.join(output_dir, EVAL_ONLY_DIR)
    cfg.freeze()
    holder = "pid {} on host {}, started {}".format(outcome.get("pid", "?"), outcome.get("host", "?"),
                                                     outcome.get("started", "?")) if outcome else "another process"
    return cfg, ("OUTPUT_DIR {} is in use by a training ({}): this --eval-only run writes its log.txt and "
                 "config.yaml to {} instead, so that the training's own stay as they are.".format(
                     output_dir, holder, cfg.OUTPUT_DIR))
