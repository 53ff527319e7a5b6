"""SynthReID: a small, deterministic, person-like ReID dataset generated on first use.

Identities are drawn as pedestrians (head, hair, torso with a clothing pattern, trousers or shorts,
shoes, sometimes a bag). Identities come in *confusable pairs*: the second of a pair copies the first
and changes one attribute (pattern, bag, shoes, hair, a shade of trousers), which makes the hard
negatives the EWTH paper is about. Six cameras differ in background, light, colour cast, blur, noise,
scale and viewpoint (front/back). The layout is Market1501's (``bounding_box_train/``, ``query/``,
``bounding_box_test/``, names ``PPPP_cCs1_FFFFFF_NN.jpg``) so any Market-style reader works too.

The set is generated under ``$FASTREID_DATASETS/SynthReID`` (default ``datasets/``) into a hidden temporary
folder; its marker file ``SYNTHREID_COMPLETE`` is written last (with :func:`fastreid_ewth.files.atomic_write`,
so it is whole or absent), then the folder is renamed into place. An interrupted run never leaves a folder
under the final name, let alone one with a marker, and of two processes generating at once the first rename
wins and the other drops its copy. Every image comes from its own seeded generator: the same seed gives the
same bytes.
"""
import glob
import io
import logging
import os
import re
import shutil
import tempfile

import numpy as np
from PIL import Image

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

from ..files import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["SynthReID", "generate_synth_reid", "SYNTH_LAYOUT"]

# Bump when the renderer changes, so an old folder is not mistaken for the current one.
GENERATOR_VERSION = 1
HEIGHT, WIDTH = 128, 64
NUM_CAMERAS = 6
NUM_TRAIN_IDS = 160  # 80 confusable pairs
NUM_TEST_IDS = 100  # 50 confusable pairs, disjoint from training
JPEG_QUALITY = 92
MARKER = "SYNTHREID_COMPLETE"

SYNTH_LAYOUT = ("bounding_box_train", "query", "bounding_box_test")

_PATTERNS = ("solid", "hstripes", "vstripes", "checks", "dots", "diagonal")


# --------------------------------------------------------------------------------------------------
# identities and cameras
# --------------------------------------------------------------------------------------------------
def _hsv(h, s, v):
    """HSV in [0, 1] -> RGB float array of shape (3,)."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


def _random_colour(rng, sat=(0.35, 0.95), val=(0.3, 0.95)):
    return _hsv(rng.random(), rng.uniform(*sat), rng.uniform(*val))


def _identity(rng):
    return {
        "upper": _random_colour(rng),
        "upper2": _random_colour(rng),
        "pattern": _PATTERNS[rng.integers(len(_PATTERNS))],
        "period": int(rng.integers(4, 9)),
        "lower": _random_colour(rng, sat=(0.1, 0.7), val=(0.15, 0.8)),
        "shorts": bool(rng.random() < 0.25),
        "shoes": _random_colour(rng, sat=(0.0, 0.8), val=(0.05, 0.9)),
        "skin": _hsv(rng.uniform(0.02, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.45, 0.95)),
        "hair": _hsv(rng.uniform(0.0, 0.12), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.6)),
        "long_hair": bool(rng.random() < 0.35),
        "bag": ("none", "backpack", "handbag")[rng.integers(3)],
        "bag_colour": _random_colour(rng, val=(0.1, 0.8)),
        "width": rng.uniform(0.85, 1.15),
    }


def _confusable(base, rng):
    """Copy of ``base`` with one attribute changed: the pair's hard negative."""
    ident = dict(base)
    change = ("pattern", "bag", "shoes", "hair", "lower")[rng.integers(5)]
    if change == "pattern":
        ident["pattern"] = _PATTERNS[(_PATTERNS.index(base["pattern"]) + 1 + rng.integers(len(_PATTERNS) - 1))
                                     % len(_PATTERNS)]
    elif change == "bag":
        ident["bag"] = ("none", "backpack", "handbag")[(("none", "backpack", "handbag").index(base["bag"]) + 1
                                                        + rng.integers(2)) % 3]
    elif change == "shoes":
        ident["shoes"] = 1.0 - base["shoes"]
    elif change == "hair":
        ident["long_hair"] = not base["long_hair"]
        ident["hair"] = np.clip(base["hair"] * rng.uniform(1.6, 2.4), 0, 1)
    else:
        ident["lower"] = np.clip(base["lower"] + rng.choice([-1, 1]) * rng.uniform(0.2, 0.35), 0, 1)
    return ident


def _identities(seed, first_pid, count):
    ids = {}
    for k in range(0, count, 2):
        base = _identity(np.random.default_rng([seed, 1, first_pid + k]))
        ids[first_pid + k] = base
        ids[first_pid + k + 1] = _confusable(base, np.random.default_rng([seed, 2, first_pid + k]))
    return ids


def _camera(seed, cam):
    rng = np.random.default_rng([seed, 3, cam])
    return {
        "wall": _random_colour(rng, sat=(0.05, 0.5), val=(0.3, 0.9)),
        "floor": _random_colour(rng, sat=(0.05, 0.4), val=(0.2, 0.7)),
        "horizon": rng.uniform(0.55, 0.8),
        "texture": rng.uniform(0.02, 0.12),
        "gain": rng.uniform(0.65, 1.25),
        "tint": 1.0 + rng.uniform(-0.15, 0.15, size=3).astype(np.float32),
        "noise": rng.uniform(0.01, 0.05),
        "blur": int(rng.integers(0, 3)),
        "scale": rng.uniform(0.75, 0.95),
        "back_view": rng.random() < 0.5,
    }


# --------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------
def _pattern_mask(kind, period, yy, xx, phase):
    if kind == "solid":
        return np.zeros_like(yy, dtype=bool)
    if kind == "hstripes":
        return ((yy + phase) // (period / 2)) % 2 == 1
    if kind == "vstripes":
        return ((xx + phase) // (period / 2)) % 2 == 1
    if kind == "checks":
        return ((yy // period + xx // period) % 2) == 1
    if kind == "dots":
        return ((yy % period - period / 2) ** 2 + (xx % period - period / 2) ** 2) < (period / 3.2) ** 2
    return ((yy + xx + phase) // (period / 2)) % 2 == 1  # diagonal


def _render(ident, cam, rng):
    """One HEIGHT×WIDTH×3 uint8 image of ``ident`` seen by camera ``cam``; ``rng`` gives pose and noise."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    img = np.empty((HEIGHT, WIDTH, 3), dtype=np.float32)

    # background: wall above a horizon, floor below, with a camera-specific texture
    horizon = HEIGHT * (cam["horizon"] + rng.uniform(-0.05, 0.05))
    wall = yy < horizon
    img[wall] = cam["wall"]
    img[~wall] = cam["floor"]
    stripes = np.sin(xx * rng.uniform(0.2, 0.6) + yy * rng.uniform(0.0, 0.3) + rng.uniform(0, 6.3))
    img += (cam["texture"] * stripes)[..., None]

    # person geometry (in pixels); scale and position jitter per image
    scale = cam["scale"] * rng.uniform(0.92, 1.05)
    h = HEIGHT * scale
    top = (HEIGHT - h) * rng.uniform(0.2, 0.8)
    cx = WIDTH / 2 + rng.uniform(-4, 4)
    half_w = WIDTH * 0.22 * ident["width"]
    head_r = h * 0.065
    head_cy = top + head_r * 1.2
    neck = head_cy + head_r
    waist = top + h * 0.48
    knee = top + h * 0.72
    foot = top + h * 0.96
    stride = rng.uniform(0.0, 0.35) * half_w

    def fill(mask, colour):
        img[mask] = colour

    # legs (two, with stride), shorts show skin below the knee
    for side in (-1, 1):
        leg_cx = cx + side * (half_w * 0.45 + stride * (yy - waist) / max(foot - waist, 1))
        leg = (np.abs(xx - leg_cx) < half_w * 0.38) & (yy >= waist) & (yy < foot)
        fill(leg, ident["lower"])
        if ident["shorts"]:
            fill(leg & (yy >= knee), ident["skin"])
        shoe = (np.abs(xx - leg_cx) < half_w * 0.45) & (yy >= foot - h * 0.04) & (yy < foot + h * 0.02)
        fill(shoe, ident["shoes"])

    # torso with the clothing pattern; arms in the same colour, swinging
    torso = (np.abs(xx - cx) < half_w) & (yy >= neck) & (yy < waist)
    fill(torso, ident["upper"])
    fill(torso & _pattern_mask(ident["pattern"], ident["period"], yy - neck, xx - cx, rng.uniform(0, 2)),
         ident["upper2"])
    for side in (-1, 1):
        swing = rng.uniform(-0.15, 0.15) * half_w
        arm_cx = cx + side * (half_w * 1.18) + swing * (yy - neck) / max(waist - neck, 1)
        arm = (np.abs(xx - arm_cx) < half_w * 0.2) & (yy >= neck + 1) & (yy < waist + h * 0.05)
        fill(arm, ident["upper"])
        hand = (np.abs(xx - arm_cx) < half_w * 0.2) & (yy >= waist + h * 0.05) & (yy < waist + h * 0.09)
        fill(hand, ident["skin"])

    # bag: a backpack covers the back (seen from behind) or shows as straps (from the front)
    if ident["bag"] == "backpack":
        if cam["back_view"]:
            fill((np.abs(xx - cx) < half_w * 0.75) & (yy >= neck + h * 0.04) & (yy < waist - h * 0.04),
                 ident["bag_colour"])
        else:
            for side in (-1, 1):
                fill((np.abs(xx - (cx + side * half_w * 0.55)) < half_w * 0.14) & (yy >= neck) & (yy < waist),
                     ident["bag_colour"])
    elif ident["bag"] == "handbag":
        side = 1 if not cam["back_view"] else -1
        bx = cx + side * half_w * 1.45
        fill((np.abs(xx - bx) < half_w * 0.35) & (yy >= waist - h * 0.02) & (yy < waist + h * 0.12),
             ident["bag_colour"])

    # head and hair; long hair falls on the shoulders, from behind hair covers the face
    head = (xx - cx) ** 2 + (yy - head_cy) ** 2 < head_r ** 2
    fill(head, ident["hair"] if cam["back_view"] else ident["skin"])
    hair_cap = head & (yy < head_cy - head_r * 0.3)
    fill(hair_cap, ident["hair"])
    if ident["long_hair"]:
        fill((np.abs(xx - cx) < head_r * 1.1) & (yy >= head_cy) & (yy < neck + h * 0.08) & ~head
             if not cam["back_view"] else (np.abs(xx - cx) < head_r * 1.2) & (yy >= head_cy)
             & (yy < neck + h * 0.1), ident["hair"])

    # occasional occluder in front of the legs (a bench, a car bonnet, another pedestrian's bag)
    if rng.random() < 0.15:
        occ_top = rng.uniform(0.65, 0.85) * HEIGHT
        fill(yy >= occ_top, _random_colour(rng, val=(0.1, 0.8)))

    # camera: light, colour cast, blur, sensor noise; viewpoint mirror at random
    img = img * cam["gain"] * rng.uniform(0.85, 1.15) * cam["tint"]
    for _ in range(cam["blur"]):
        img[1:-1] = (img[:-2] + 2 * img[1:-1] + img[2:]) / 4
        img[:, 1:-1] = (img[:, :-2] + 2 * img[:, 1:-1] + img[:, 2:]) / 4
    img += rng.normal(0.0, cam["noise"], size=img.shape).astype(np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _encode(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# splits and generation
# --------------------------------------------------------------------------------------------------
def _visits(seed, pid, rng_tag):
    """Cameras an identity passes and how many frames each camera keeps: dict cam -> count."""
    rng = np.random.default_rng([seed, rng_tag, pid])
    cams = rng.choice(NUM_CAMERAS, size=int(rng.integers(2, 5)), replace=False)
    return {int(c): int(rng.integers(2, 5)) for c in sorted(cams)}


def _plan(seed):
    """List of (folder, pid, cam, frame_index) for every image of the dataset."""
    plan = []
    for pid in range(1, NUM_TRAIN_IDS + 1):
        for cam, count in _visits(seed, pid, 4).items():
            plan.extend(("bounding_box_train", pid, cam, i) for i in range(count))
    for pid in range(NUM_TRAIN_IDS + 1, NUM_TRAIN_IDS + NUM_TEST_IDS + 1):
        visits = _visits(seed, pid, 5)
        # one query from each of (at most) two cameras; everything else goes to the gallery, so every
        # query has a cross-camera match
        query_cams = list(visits)[:2]
        for cam, count in visits.items():
            for i in range(count):
                folder = "query" if (cam in query_cams and i == 0) else "bounding_box_test"
                plan.append((folder, pid, cam, i))
    return plan


def generate_synth_reid(folder, seed=0):
    """Write the whole dataset's images into ``folder`` (created if missing; no marker). Returns the count."""
    identities = _identities(seed, 1, NUM_TRAIN_IDS)
    identities.update(_identities(seed, NUM_TRAIN_IDS + 1, NUM_TEST_IDS))
    cameras = [_camera(seed, c) for c in range(NUM_CAMERAS)]
    for sub in SYNTH_LAYOUT:
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    plan = _plan(seed)
    for split, pid, cam, i in plan:
        rng = np.random.default_rng([seed, 6, pid, cam, i])
        data = _encode(_render(identities[pid], cameras[cam], rng))
        name = "{:04d}_c{}s1_{:06d}_{:02d}.jpg".format(pid, cam + 1, 25 * i + 1, i)
        with open(os.path.join(folder, split, name), "wb") as f:
            f.write(data)
    return len(plan)


def _marker_text(seed):
    return "SynthReID generator {} seed {}\n".format(GENERATOR_VERSION, seed)


def ensure_synth_reid(root, seed=0, name="SynthReID"):
    """Return ``root/name``, generating it first if it is not there (atomically)."""
    target = os.path.join(root, name)
    marker = os.path.join(target, MARKER)
    if os.path.isdir(target):
        if not os.path.isfile(marker):
            raise RuntimeError(
                "{} exists but is not a complete SynthReID folder (no {} file). Delete it and run again; "
                "it is regenerated in a few seconds.".format(target, MARKER))
        with open(marker) as f:
            found = f.read()
        if found != _marker_text(seed):
            raise RuntimeError(
                "{} was made by another generator version or seed ({!r}, expected {!r}). Delete it and run "
                "again to regenerate it.".format(target, found.strip(), _marker_text(seed).strip()))
        return target

    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".{}.tmp-".format(name), dir=root)
    try:
        logger.info("Generating SynthReID (seed %d) under %s ...", seed, target)
        count = generate_synth_reid(tmp, seed)
        # the complete flag, after every image: whole or absent, whatever happens to this process
        text = _marker_text(seed).encode("utf-8")
        atomic_write(os.path.join(tmp, MARKER), lambda f: f.write(text))
        try:
            os.rename(tmp, target)
        except OSError:
            # another process (e.g. another rank) finished first: keep theirs
            if not os.path.isfile(marker):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            logger.info("SynthReID: %d images written to %s", count, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


_NAME_RE = re.compile(r"^(\d+)_c(\d+)")


@DATASET_REGISTRY.register()
class SynthReID(ImageDataset):
    """Synthetic person ReID set in Market1501 layout, generated under ``root`` on first use.

    160 training identities (80 confusable pairs), 100 test identities, 6 cameras.
    """
    dataset_dir = "SynthReID"
    dataset_name = "synthreid"

    def __init__(self, root="datasets", **kwargs):
        self.root = root
        self.dataset_dir = ensure_synth_reid(root, seed=0, name=self.dataset_dir)
        train = self._read(os.path.join(self.dataset_dir, "bounding_box_train"), is_train=True)
        query = self._read(os.path.join(self.dataset_dir, "query"), is_train=False)
        gallery = self._read(os.path.join(self.dataset_dir, "bounding_box_test"), is_train=False)
        super().__init__(train, query, gallery, **kwargs)

    def _read(self, folder, is_train):
        items = []
        for path in sorted(glob.glob(os.path.join(folder, "*.jpg"))):
            pid, cam = map(int, _NAME_RE.match(os.path.basename(path)).groups())
            cam -= 1
            if is_train:
                # fastreid prefixes training labels with the dataset name so that datasets can be combined
                items.append((path, "{}_{}".format(self.dataset_name, pid), "{}_{}".format(self.dataset_name, cam)))
            else:
                items.append((path, pid, cam))
        return items
