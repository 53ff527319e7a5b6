"""Your own data from YAML alone: a folder in Market1501 layout (``ReidFolder``) or list files (``ReidList``).

A folder anywhere on disk, laid out as Market1501 is::

    DATASETS:
      NAMES: ("ReidFolder",)      # train on it
      TESTS: ("ReidFolder",)      # and/or test on it
      FOLDER:
        ROOT: /data/my_cameras    # holds bounding_box_train/, query/, bounding_box_test/

Every image in those folders is named ``PID_cCAM...`` (e.g. ``0002_c3s1_000551_01.jpg``): identity, then
``_c`` and the camera counted from 1. As in fastreid's Market1501 reader, identity ``-1`` marks junk images
(skipped) and ``0`` distractors (kept in the gallery); files that are not images (``Thumbs.db``) are ignored.
A test-only folder needs no ``bounding_box_train/``.

List files, one image per line as ``path, pid, camid`` (commas or blanks; ``#`` starts a comment; camera ids
counted from 0 as fastreid does)::

    DATASETS:
      NAMES: ("ReidList",)
      TESTS: ("ReidList",)
      LIST:
        TRAIN: /data/lists/train.txt
        QUERY: /data/lists/query.txt
        GALLERY: /data/lists/gallery.txt
        IMAGE_ROOT: /data/images  # relative paths start here (default: each list file's folder)

fastreid builds datasets from their name and ``$FASTREID_DATASETS`` alone; these two also read their config
node, so they are built by :func:`fastreid_ewth.data.build_dataset` (which the loaders of
:class:`~fastreid_ewth.engine.EWTHTrainer`, the run checks and ``tools/embed.py`` use) through their
``from_config``. Reading checks every entry; a bad
one is refused with the file (and line) it came from and the expected form. An empty split is refused by
:func:`fastreid_ewth.data.require_split` when it is used, so a test-only folder still works.
"""
import os
import re

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

__all__ = ["ReidFolder", "ReidList", "IMAGE_EXTENSIONS", "FOLDER_SPLITS", "add_own_data_config", "MARKET_NAME",
           "read_market_folder", "read_list_file"]

#: file endings read as images (lower case)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: the Market1501 sub-folder of each split
FOLDER_SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
#: an image name of Market1501's layout: identity (-1 = junk), "_c", camera counted from 1
MARKET_NAME = re.compile(r"^(-1|\d+)_c(\d+)")
_PATTERN_TEXT = "PID_cCAM<anything>.jpg, e.g. 0002_c3s1_000551_01.jpg (PID >= 0, or -1 for junk; CAM >= 1)"
_LIST_KEYS = {"train": "TRAIN", "query": "QUERY", "gallery": "GALLERY"}


def add_own_data_config(cfg):
    """The config keys of ``ReidFolder`` and ``ReidList`` (empty = not set)."""
    if "FOLDER" not in cfg.DATASETS:
        cfg.DATASETS.FOLDER = type(cfg)()
        cfg.DATASETS.FOLDER.ROOT = ""
    if "LIST" not in cfg.DATASETS:
        cfg.DATASETS.LIST = type(cfg)()
        cfg.DATASETS.LIST.TRAIN = ""
        cfg.DATASETS.LIST.QUERY = ""
        cfg.DATASETS.LIST.GALLERY = ""
        cfg.DATASETS.LIST.IMAGE_ROOT = ""


class _OwnData(ImageDataset):
    """Train/query/gallery lists given whole; ``missing[split]`` says why a split is empty (for the error)."""

    def __init__(self, name, train, query, gallery, missing, **kwargs):
        self.name = name
        self.missing = missing
        # fastreid prefixes training labels with the dataset name, so that several datasets can be combined
        train = [(path, "{}_{}".format(self.dataset_name, pid), "{}_{}".format(self.dataset_name, cam))
                 for path, pid, cam in train]
        super().__init__(train, query, gallery, **kwargs)


@DATASET_REGISTRY.register()
class ReidFolder(_OwnData):
    """A Market1501-layout folder named by ``DATASETS.FOLDER.ROOT``."""
    dataset_name = "reidfolder"

    def __init__(self, folder="", **kwargs):
        kwargs.pop("root", None)  # $FASTREID_DATASETS does not apply: the folder is named in full
        if not folder:
            raise ValueError("ReidFolder needs DATASETS.FOLDER.ROOT: the folder that holds bounding_box_train/, "
                             "query/ and bounding_box_test/ (e.g. DATASETS.FOLDER.ROOT /data/my_cameras). It is "
                             "built from the config by fastreid_ewth.data.build_dataset(cfg, name), as "
                             "EWTHTrainer's loaders do")
        given, folder = folder, os.path.abspath(os.path.expanduser(folder))
        if not os.path.isdir(folder):
            raise FileNotFoundError("DATASETS.FOLDER.ROOT {!r} is not a folder; pass the folder that holds "
                                    "bounding_box_train/, query/ and bounding_box_test/".format(given))
        self.dataset_dir = folder
        splits, missing = {}, {}
        for split, sub in FOLDER_SPLITS.items():
            path = os.path.join(folder, sub)
            if os.path.isdir(path):
                splits[split] = read_market_folder(path)
                if not splits[split]:
                    missing[split] = "{} holds no image named {}".format(path, _PATTERN_TEXT)
            else:
                splits[split] = []
                missing[split] = "there is no folder {}".format(path)
        super().__init__("ReidFolder", splits["train"], splits["query"], splits["gallery"], missing, **kwargs)

    @classmethod
    def from_config(cls, cfg, **kwargs):
        return cls(folder=cfg.DATASETS.FOLDER.ROOT, **kwargs)


def read_market_folder(path):
    """``[(image, pid, camid)]`` of one Market1501-layout folder, sorted by file name; junk (pid -1) skipped.

    Raises ``ValueError`` naming the first (in sorted order) image whose name is not of the layout.
    """
    items = []
    for name in sorted(os.listdir(path)):
        if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
            continue  # hidden files, Thumbs.db, a README: not images
        match = MARKET_NAME.match(name)
        if match is None or int(match.group(2)) < 1:
            raise ValueError("{}: the image name does not follow the Market1501 layout, which names every image "
                             "{}. Rename the images, or describe them in list files (ReidList, "
                             "DATASETS.LIST.*)".format(os.path.join(path, name), _PATTERN_TEXT))
        pid, cam = int(match.group(1)), int(match.group(2)) - 1
        if pid == -1:
            continue
        items.append((os.path.join(path, name), pid, cam))
    return items


@DATASET_REGISTRY.register()
class ReidList(_OwnData):
    """Images listed in ``DATASETS.LIST.TRAIN`` / ``QUERY`` / ``GALLERY`` as ``path, pid, camid`` lines."""
    dataset_name = "reidlist"

    def __init__(self, train="", query="", gallery="", image_root="", **kwargs):
        kwargs.pop("root", None)
        files = {"train": train, "query": query, "gallery": gallery}
        if not any(files.values()):
            raise ValueError("ReidList needs list files: DATASETS.LIST.TRAIN (to train) and/or DATASETS.LIST.QUERY "
                             "and DATASETS.LIST.GALLERY (to test), each with one 'path, pid, camid' line per image. "
                             "It is built from the config by fastreid_ewth.data.build_dataset(cfg, name), as "
                             "EWTHTrainer's loaders do")
        splits, missing = {}, {}
        for split, list_file in files.items():
            key = "DATASETS.LIST." + _LIST_KEYS[split]
            if not list_file:
                splits[split] = []
                missing[split] = "{} is not set".format(key)
                continue
            if not os.path.isfile(list_file):
                raise FileNotFoundError("{} {!r} does not exist; pass a text file with one 'path, pid, camid' line "
                                        "per image".format(key, list_file))
            base = image_root or os.path.dirname(os.path.abspath(list_file))
            splits[split] = read_list_file(list_file, base)
            if not splits[split]:
                missing[split] = "{} {} lists no image".format(key, list_file)
        self.dataset_dir = image_root or os.path.dirname(os.path.abspath(train or query or gallery))
        super().__init__("ReidList", splits["train"], splits["query"], splits["gallery"], missing, **kwargs)

    @classmethod
    def from_config(cls, cfg, **kwargs):
        node = cfg.DATASETS.LIST
        return cls(train=node.TRAIN, query=node.QUERY, gallery=node.GALLERY, image_root=node.IMAGE_ROOT, **kwargs)


def read_list_file(list_file, image_root):
    """``[(image, pid, camid)]`` of a list file, in its order; relative paths start at ``image_root``.

    Raises ``ValueError`` naming the file, the line and what is wrong with it (fields, numbers, a missing image).
    """
    items = []
    first = True
    with open(list_file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            fields = [p for p in re.split(r"[,\s]+", text) if p]
            where = "{}, line {} ({!r})".format(list_file, number, line.rstrip("\n"))
            if first and [p.lower() for p in fields] == ["path", "pid", "camid"]:
                first = False
                continue  # a header line
            first = False
            if len(fields) != 3:
                raise ValueError("{}: expected 3 fields 'path, pid, camid', got {}".format(where, len(fields)))
            path, pid, cam = fields
            try:
                pid, cam = int(pid), int(cam)
            except ValueError:
                raise ValueError("{}: pid and camid must be integers (camid counted from 0)".format(where)) from None
            if pid < -1 or cam < 0:
                raise ValueError("{}: pid must be >= 0 (or -1 for junk) and camid >= 0, got pid {} camid {}".format(
                    where, pid, cam))
            full = path if os.path.isabs(path) else os.path.join(image_root, path)
            if not os.path.isfile(full):
                raise FileNotFoundError("{}: image {} does not exist (relative paths start at {}; set "
                                        "DATASETS.LIST.IMAGE_ROOT to change that)".format(where, full, image_root))
            if pid == -1:
                continue
            items.append((full, pid, cam))
    return items
