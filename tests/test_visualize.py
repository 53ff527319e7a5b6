"""tools/visualize.py: rank-list grids read back pixel by pixel against a ranking and AP computed here with a
slow loop from the protocol's definition, side by side, t-SNE / histogram / ROC files, the index page, the
projector, and bad input refused before anything is written.

The embeddings are small hand-made sets: four identities over three cameras, a gallery-only distractor
identity, a query whose identity appears in the gallery only in its own camera (no correct match), and
"junk" gallery images (query's identity and camera) placed right next to their query, so they would come
first if they were not left out. Every image is a solid colour of its own, so the colour at a tile's centre
says which image it shows.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fastreid_ewth.evaluation import evaluate_features
from fastreid_ewth.inference.embeddings import Embeddings, save_embeddings
from fastreid_ewth.visualize import CORRECT, QUERY, WRONG, Grid, main, rank_model
from fastreid_ewth.visualize.grid import BACKGROUND
from fastreid_ewth.visualize.images import PLACEHOLDER_COLOUR

from conftest import REPO

TILE = (32, 16)  # H, W of the tiles in these tests
DIM = 8
# (pid, camid) of each image; query 4 (pid 5) has gallery images only from its own camera 0
QUERY_LABELS = [(1, 0), (2, 0), (3, 1), (4, 2), (5, 0)]
GALLERY_LABELS = ([(1, 0), (1, 1), (1, 1), (1, 2)] + [(2, 0), (2, 1), (2, 2)] + [(3, 1), (3, 0), (3, 2), (3, 2)]
                  + [(4, 2), (4, 2), (4, 0)] + [(5, 0), (5, 0)] + [(9, 1), (9, 2)])


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def _colour(i):
    return (30 + (37 * i) % 200, 30 + (91 * i + 60) % 200, 30 + (53 * i + 120) % 200)


def _features(seed, noise):
    """Query and gallery features: identity centres plus noise; junk next to its query."""
    rng = np.random.default_rng(seed)
    centres = {pid: rng.normal(size=DIM) for pid in (1, 2, 3, 4, 5, 9)}
    q = np.array([centres[p] + noise * rng.normal(size=DIM) for p, _ in QUERY_LABELS])
    g = np.array([centres[p] + noise * rng.normal(size=DIM) for p, _ in GALLERY_LABELS])
    for i, (p, c) in enumerate(QUERY_LABELS):
        for j, (gp, gc) in enumerate(GALLERY_LABELS):
            if (gp, gc) == (p, c):
                g[j] = q[i] + 0.01 * rng.normal(size=DIM)
    return q.astype(np.float32), g.astype(np.float32)


def _write_images(folder):
    folder.mkdir(exist_ok=True)
    paths = {}
    for kind, labels, offset in (("q", QUERY_LABELS, 0), ("g", GALLERY_LABELS, len(QUERY_LABELS))):
        paths[kind] = []
        for i, (pid, cam) in enumerate(labels):
            path = folder / "{}{:02d}_{}_c{}.png".format(kind, i, pid, cam)
            Image.new("RGB", (20 + i, 40 + 2 * i), _colour(offset + i)).save(path)
            paths[kind].append(str(path))
    colours = [_colour(i) for i in range(len(QUERY_LABELS) + len(GALLERY_LABELS))]
    assert len(set(colours)) == len(colours)
    return paths


def _save(folder, feats, labels, paths, name):
    folder.mkdir(parents=True, exist_ok=True)
    emb = Embeddings(feats, np.array([p for p, _ in labels]), np.array([c for _, c in labels]), np.array(paths))
    return save_embeddings(str(folder / name), emb)


class Case:
    """Files of model A (and B) and the expected ranking, computed here."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.paths = _write_images(tmp_path / "img")
        self.feats = {"A": _features(0, 0.9), "B": _features(0, 0.3)}
        self.files = {}
        for model, (q, g) in self.feats.items():
            self.files[model] = (_save(tmp_path / model, q, QUERY_LABELS, self.paths["q"], "query.npz"),
                                 _save(tmp_path / model, g, GALLERY_LABELS, self.paths["g"], "gallery.npz"))

    def args(self, out, model="A", *extra):
        q, g = self.files[model]
        return ["--query", q, "--gallery", g, "--output", str(out), "--tile-size", str(TILE[0]), str(TILE[1]),
                *extra]

    def compare_args(self, out, *extra):
        qb, gb = self.files["B"]
        return self.args(out, "A", "--compare-query", qb, "--compare-gallery", gb, "--names", "A", "B", *extra)


@pytest.fixture
def case(tmp_path):
    return Case(tmp_path)


# --------------------------------------------------------------------------------------------------
# the ranking and AP, from the definitions (slow loops)
# --------------------------------------------------------------------------------------------------
def slow_cosine(a, b):
    dot = sum(float(x) * float(y) for x, y in zip(a, b))
    na = math.sqrt(sum(float(x) ** 2 for x in a))
    nb = math.sqrt(sum(float(y) ** 2 for y in b))
    return 1.0 - dot / (na * nb)


def slow_ranking(q_feats, g_feats, i):
    """Gallery indices of query ``i`` by distance with its junk left out, and its AP (None: no match)."""
    pid, cam = QUERY_LABELS[i]
    dists = [(slow_cosine(q_feats[i], g_feats[j]), j) for j in range(len(GALLERY_LABELS))]
    dists.sort()
    values = [d for d, _ in dists]
    assert all(b - a > 1e-5 for a, b in zip(values, values[1:])), "test data has near ties"
    kept = [j for _, j in dists if GALLERY_LABELS[j] != (pid, cam)]
    hits, precisions = 0, []
    for position, j in enumerate(kept, start=1):
        if GALLERY_LABELS[j][0] == pid:
            hits += 1
            precisions.append(hits / position)
    return kept, (sum(precisions) / len(precisions) if precisions else None)


def expected_order(q_feats, g_feats, sort):
    aps = {i: slow_ranking(q_feats, g_feats, i)[1] for i in range(len(QUERY_LABELS))}
    valid = sorted((ap, i) for i, ap in aps.items() if ap is not None)
    values = [ap for ap, _ in valid]
    assert all(b - a > 1e-6 for a, b in zip(values, values[1:])), "test data has equal APs"
    order = [i for _, i in valid]
    return order if sort == "worst" else order[::-1]


# --------------------------------------------------------------------------------------------------
# reading a grid back
# --------------------------------------------------------------------------------------------------
def cell_origin(row, col, k):
    """Top-left corner of a cell, from the layout documented in fastreid_ewth.visualize.grid."""
    cell_w = TILE[1] + 2 * Grid.FRAME
    cell_h = TILE[0] + 2 * Grid.FRAME + Grid.CAPTION
    x = Grid.MARGIN + Grid.LABEL + (0 if col == 0 else cell_w + Grid.QUERY_GAP + (col - 1) * (cell_w + Grid.GAP))
    return x, Grid.MARGIN + Grid.HEADER + row * (cell_h + Grid.ROW_GAP)


def expected_size(rows, k):
    cell_w = TILE[1] + 2 * Grid.FRAME
    cell_h = TILE[0] + 2 * Grid.FRAME + Grid.CAPTION
    return (2 * Grid.MARGIN + Grid.LABEL + cell_w + Grid.QUERY_GAP + k * cell_w + (k - 1) * Grid.GAP,
            2 * Grid.MARGIN + Grid.HEADER + rows * cell_h + (rows - 1) * Grid.ROW_GAP)


def read_cell(image, row, col, k):
    """(frame colour, image colour) of a cell: a pixel in the frame's middle and the tile's centre."""
    x, y = cell_origin(row, col, k)
    frame = image.getpixel((x + Grid.FRAME // 2, y + Grid.FRAME + TILE[0] // 2))
    centre = image.getpixel((x + Grid.FRAME + TILE[1] // 2, y + Grid.FRAME + TILE[0] // 2))
    return tuple(frame), tuple(centre)


def assert_row(image, row, k, q_feats, g_feats, query):
    """Row ``row`` of ``image`` shows ``query`` and its k closest kept gallery images, correctly framed."""
    frame, centre = read_cell(image, row, 0, k)
    assert frame == QUERY and centre == _colour(query)
    kept, _ = slow_ranking(q_feats, g_feats, query)
    for col in range(1, k + 1):
        frame, centre = read_cell(image, row, col, k)
        if col > len(kept):
            assert frame == BACKGROUND and centre == BACKGROUND
            continue
        j = kept[col - 1]
        assert centre == _colour(len(QUERY_LABELS) + j), "row {} col {}".format(row, col)
        correct = GALLERY_LABELS[j][0] == QUERY_LABELS[query][0]
        assert frame == (CORRECT if correct else WRONG), "row {} col {}".format(row, col)


def open_png(path):
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.convert("RGB")


# --------------------------------------------------------------------------------------------------
# rank lists
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sort", ["worst", "best"])
def test_ranklist_rows_and_frames(case, tmp_path, sort, capsys):
    out = tmp_path / "out"
    k = 5
    assert main(case.args(out, "A", "-k", str(k), "--sort", sort, "--skip", "tsne", "distances", "roc")) == 0
    q_feats, g_feats = case.feats["A"]
    order = expected_order(q_feats, g_feats, sort)
    assert len(order) == 4  # query 4 has no correct match: not sorted, not shown
    image = open_png(out / "ranklist.png")
    assert image.size == expected_size(len(order), k)
    for row, query in enumerate(order):
        assert_row(image, row, k, q_feats, g_feats, query)
    printed = capsys.readouterr().out
    assert str(out / "ranklist.png") in printed and str(out / "index.html") in printed


def test_junk_is_left_out_but_would_come_first(case):
    """The data puts each query's junk closest to it; the shown ranking must skip it (checked above)."""
    q_feats, g_feats = case.feats["A"]
    for i, (pid, cam) in enumerate(QUERY_LABELS):
        junk = [j for j, lab in enumerate(GALLERY_LABELS) if lab == (pid, cam)]
        if junk:
            nearest = min(range(len(GALLERY_LABELS)), key=lambda j: slow_cosine(q_feats[i], g_feats[j]))
            assert nearest in junk
            kept, _ = slow_ranking(q_feats, g_feats, i)
            assert not set(junk) & set(kept)


def test_ranking_agrees_with_evaluator_and_slow_loop(case):
    from fastreid_ewth.inference.embeddings import load_embeddings

    q, g = (load_embeddings(p) for p in case.files["A"])
    ranking = rank_model(q, g, "cosine", k=len(g), max_negatives=10 ** 6)
    result = evaluate_features(q.feats, g.feats, q.pids, g.pids, q.camids, g.camids, "cosine")
    assert ranking.mAP == pytest.approx(result["mAP"], abs=1e-12)
    assert ranking.rank1 == pytest.approx(result["Rank-1"], abs=1e-12)
    for i in range(len(q)):
        kept, ap = slow_ranking(q.feats, g.feats, i)
        assert ranking.top_index[i, :len(kept)].tolist() == kept
        assert (ranking.top_index[i, len(kept):] == -1).all()
        assert ranking.valid[i] == (ap is not None)
        if ap is not None:
            assert ranking.ap[i] == pytest.approx(ap, abs=1e-9)
    # positives: same identity, other camera; negatives: other identity (all of them: few)
    num_pos = sum(1 for p, c in QUERY_LABELS for gp, gc in GALLERY_LABELS if gp == p and gc != c)
    num_neg = sum(1 for p, _ in QUERY_LABELS for gp, _ in GALLERY_LABELS if gp != p)
    assert ranking.pos_dist.size == num_pos and ranking.neg_dist.size == ranking.num_neg == num_neg
    sampled = rank_model(q, g, "cosine", k=3, max_negatives=7, seed=1)
    assert sampled.neg_dist.size == 7 and sampled.num_neg == num_neg
    assert set(np.round(sampled.neg_dist, 6)) <= set(np.round(ranking.neg_dist, 6))


def test_queries_by_index_and_pages(case, tmp_path):
    """--queries shows the given rows in order, also one without a match; --per-page splits into pages."""
    out = tmp_path / "out"
    chosen = [4, 0, 3, 2, 1]
    assert main(case.args(out, "A", "-k", "3", "--queries", *map(str, chosen), "--per-page", "2",
                          "--skip", "tsne", "distances", "roc")) == 0
    q_feats, g_feats = case.feats["A"]
    names = ["ranklist-p1.png", "ranklist-p2.png", "ranklist-p3.png"]
    assert not (out / "ranklist.png").exists()
    for page, name in enumerate(names):
        image = open_png(out / name)
        rows = chosen[2 * page:2 * page + 2]
        assert image.size == expected_size(len(rows), 3)
        for row, query in enumerate(rows):
            assert_row(image, row, 3, q_feats, g_feats, query)
    index = (out / "index.html").read_text()
    for name in names:
        assert 'href="{}"'.format(name) in index


def test_k_larger_than_kept_gallery_leaves_empty_cells(case, tmp_path):
    out = tmp_path / "out"
    k = len(GALLERY_LABELS)  # every query has junk, so its kept gallery is shorter than k
    assert main(case.args(out, "A", "-k", str(k), "--num-queries", "2", "--skip", "tsne", "distances", "roc")) == 0
    q_feats, g_feats = case.feats["A"]
    image = open_png(out / "ranklist.png")
    assert image.size == expected_size(2, k)
    for row, query in enumerate(expected_order(q_feats, g_feats, "worst")[:2]):
        assert_row(image, row, k, q_feats, g_feats, query)


# --------------------------------------------------------------------------------------------------
# two models
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sort", ["worst", "diff"])
def test_compare_rows(case, tmp_path, sort):
    out = tmp_path / "out"
    k = 4
    assert main(case.compare_args(out, "-k", str(k), "--sort", sort, "--skip", "tsne")) == 0
    fa, fb = case.feats["A"], case.feats["B"]
    if sort == "worst":
        order = expected_order(*fa, "worst")
    else:
        ap_a = {i: slow_ranking(*fa, i)[1] for i in range(len(QUERY_LABELS))}
        ap_b = {i: slow_ranking(*fb, i)[1] for i in range(len(QUERY_LABELS))}
        diffs = sorted((-abs(ap_a[i] - ap_b[i]), i) for i in ap_a if ap_a[i] is not None)
        assert all(b[0] - a[0] > 1e-6 for a, b in zip(diffs, diffs[1:]))
        order = [i for _, i in diffs]
    image = open_png(out / "compare.png")
    assert image.size == expected_size(2 * len(order), k)
    for n, query in enumerate(order):
        assert_row(image, 2 * n, k, *fa, query)
        assert_row(image, 2 * n + 1, k, *fb, query)
    # rank list of model A alone, and both models' curves
    assert open_png(out / "ranklist.png").size == expected_size(len(order), k)
    for name in ("distances.png", "roc.png"):
        assert open_png(out / name).size[0] > 100


def test_compare_needs_the_same_images(case, tmp_path):
    q, g = case.feats["B"]
    other = list(case.paths["g"])
    other[3], other[4] = other[4], other[3]
    gb = _save(tmp_path / "B2", g, GALLERY_LABELS, other, "gallery.npz")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(case.args(out, "A", "--compare-query", case.files["B"][0], "--compare-gallery", gb))
    message = str(e.value)
    assert "--gallery" in message and "--compare-gallery" in message and "paths" in message and "row 3" in message
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# plots, index, projector
# --------------------------------------------------------------------------------------------------
def test_plots_index_and_backend(case, tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    out = tmp_path / "out"
    assert main(case.compare_args(out, "--tsne-iter", "250", "--tsne-ids", "0", "-k", "3")) == 0
    assert matplotlib.get_backend() == backend
    names = ["ranklist.png", "compare.png", "tsne.png", "distances.png", "roc.png"]
    for name in names:
        image = open_png(out / name)
        assert min(image.size) > 100
        assert len(np.unique(np.asarray(image.resize((64, 64))).reshape(-1, 3), axis=0)) > 3  # not blank
    # t-SNE and histograms: one panel per model, side by side
    assert open_png(out / "tsne.png").size[0] > 1.5 * open_png(out / "tsne.png").size[1]
    index = (out / "index.html").read_text()
    for name in names:
        assert 'src="{}"'.format(name) in index
    assert "AUC" in index and "junk" in index and "mAP" in index
    assert not [p for p in os.listdir(out) if p.endswith(".partial")]


def test_tsne_iteration_argument_of_this_sklearn(case):
    from fastreid_ewth.visualize.plots import _tsne_iter_argument, tsne_points
    import sklearn

    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    assert _tsne_iter_argument() == ("max_iter" if (major, minor) >= (1, 5) else "n_iter")
    xy = tsne_points(np.random.default_rng(0).normal(size=(6, 4)), "cosine", perplexity=30, iterations=250)
    assert xy.shape == (6, 2) and np.isfinite(xy).all()


def test_projector(case, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(case.compare_args(out, "--projector", "--skip", "ranklist", "compare", "tsne", "distances",
                                  "roc")) == 0
    folder = out / "projector"
    config = (folder / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == 2
    for tag in ("A", "B"):
        sub = folder / "00000" / tag
        lines = (sub / "metadata.tsv").read_text().splitlines()
        assert lines[0].split("\t") == ["pid", "camid", "set", "index", "file"]
        assert len(lines) == 1 + len(QUERY_LABELS) + len(GALLERY_LABELS)
        assert lines[1].split("\t")[:4] == ["1", "0", "query", "0"]
        assert (sub / "sprite.png").is_file() and (sub / "tensors.tsv").is_file()
    assert "tensorboard --logdir {}".format(folder) in capsys.readouterr().out
    assert 'href="projector/"' in (out / "index.html").read_text()


def test_projector_takes_unlabelled_files(case, tmp_path):
    q, g = case.feats["A"]
    labels = [(-1, -1)] * len(QUERY_LABELS)
    qu = _save(tmp_path / "U", q, labels, case.paths["q"], "query.npz")
    out = tmp_path / "out"
    assert main(["--query", qu, "--gallery", case.files["A"][1], "--output", str(out), "--projector",
                 "--projector-max", "6", "--skip", "ranklist", "tsne", "distances", "roc"]) == 0
    lines = (out / "projector" / "00000" / "U" / "metadata.tsv").read_text().splitlines()
    assert len(lines) == 7


def test_missing_image_placeholder(case, tmp_path, capsys):
    q_feats, g_feats = case.feats["A"]
    query = expected_order(q_feats, g_feats, "worst")[0]
    first = slow_ranking(q_feats, g_feats, query)[0][0]
    os.remove(case.paths["g"][first])
    out = tmp_path / "out"
    args = case.args(out, "A", "-k", "3", "--num-queries", "1", "--skip", "tsne", "distances", "roc")
    with pytest.raises(SystemExit) as e:
        main(args)
    assert case.paths["g"][first] in str(e.value) and "--missing-images placeholder" in str(e.value)
    assert not out.exists()
    assert main(args + ["--missing-images", "placeholder"]) == 0
    assert "1 image(s) missing" in capsys.readouterr().err
    image = open_png(out / "ranklist.png")
    x, y = cell_origin(0, 1, 3)
    assert image.getpixel((x + Grid.FRAME + 2, y + Grid.FRAME + TILE[0] // 2)) == PLACEHOLDER_COLOUR
    assert read_cell(image, 0, 1, 3)[0] in (CORRECT, WRONG)


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------
def _unlabelled(case, tmp_path):
    q, _ = case.feats["A"]
    return ["--query", _save(tmp_path / "U", q, [(-1, -1)] * len(QUERY_LABELS), case.paths["q"], "query.npz")]


def _other_dim(case, tmp_path):
    q, _ = case.feats["A"]
    return ["--query", _save(tmp_path / "D", q[:, :4].copy(), QUERY_LABELS, case.paths["q"], "query.npz")]


BAD = [
    ("unlabelled", _unlabelled, ["not labelled", "--projector"]),
    ("feature dims", _other_dim, ["4-dimensional", "8", "same model"]),
    ("k < 1", ["-k", "0"], ["-k/--topk", "at least 1"]),
    ("k > gallery", ["-k", "99"], ["-k/--topk 99", "18"]),
    ("query index", ["--queries", "1", "5"], ["--queries 5", "0 to 4"]),
    ("negative index", ["--queries", "-1"], ["--queries -1"]),
    ("metric", ["--metric", "manhattan"], ["--metric", "'manhattan'", "cosine"]),
    ("diff alone", ["--sort", "diff"], ["--sort diff", "--compare-query"]),
    ("half compare", lambda case, tmp: ["--compare-query", case.files["B"][0]], ["--compare-gallery"]),
    ("names", ["--names", "X", "Y"], ["--names", "one name"]),
    ("tsne iter", ["--tsne-iter", "100"], ["--tsne-iter", "250"]),
    ("tsne too few", ["--tsne-ids", "1"], ["t-SNE", "--tsne-ids"]),
    ("nothing", ["--skip", "ranklist", "tsne", "distances", "roc"], ["nothing to draw"]),
    ("no file", lambda case, tmp: ["--gallery", str(tmp / "nope.npz")], ["--gallery", "nope.npz"]),
]


@pytest.mark.parametrize("name,extra,messages", BAD, ids=[b[0] for b in BAD])
def test_bad_input_refused_before_writing(case, tmp_path, name, extra, messages):
    out = tmp_path / "out"
    extra = extra(case, tmp_path) if callable(extra) else extra
    with pytest.raises(SystemExit) as e:
        main(case.args(out, "A", "--tsne-iter", "250", *extra))
    message = str(e.value)
    assert message.startswith("tools/visualize.py: error:")
    for m in messages:
        assert m in message, message
    assert not out.exists()


def test_bad_input_into_existing_folder_writes_nothing(case, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SystemExit):
        main(case.args(out, "A", "--queries", "9"))
    assert os.listdir(out) == []


# --------------------------------------------------------------------------------------------------
# the script
# --------------------------------------------------------------------------------------------------
def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--query", "--compare-gallery", "--sort", "--queries", "--num-queries", "--tsne-ids",
                   "--projector", "--missing-images", "--tile-size"):
        assert option in text


def test_script_runs_from_checkout(case, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    res = subprocess.run([sys.executable, str(REPO / "tools" / "visualize.py")]
                         + case.args(out, "A", "-k", "3", "--skip", "tsne"),
                         capture_output=True, text=True, cwd=str(tmp_path), env=env)
    assert res.returncode == 0, res.stderr
    assert "open {}".format(out / "index.html") in res.stdout
    for name in ("ranklist.png", "distances.png", "roc.png", "index.html"):
        assert (out / name).is_file()
