"""tools/visualize.py: rank-list grids read back pixel by pixel against a ranking and AP computed here with a
slow loop from the protocol's definition, side by side, t-SNE / histogram / ROC files, the index page, the
projector, and bad input refused before anything is written.

The embeddings are small hand-made sets: four identities over three cameras, a gallery-only distractor
identity, a query whose identity appears in the gallery only in its own camera (no correct match), and
"junk" gallery images (query's identity and camera) placed right next to their query, so they come first
in a row (grey, no rank) and are left out of the ranks. A second set has features chosen by hand (angles
on a circle) that put junk between, level with and beyond the ranked images. Every image is a solid colour
of its own, so the colour at a tile's centre says which image it shows.
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
from fastreid_ewth.visualize import CORRECT, JUNK, QUERY, WRONG, Grid, main, rank_model
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


def _write_images(folder, q_labels=QUERY_LABELS, g_labels=GALLERY_LABELS):
    folder.mkdir(exist_ok=True)
    paths = {}
    for kind, labels, offset in (("q", q_labels, 0), ("g", g_labels, len(q_labels))):
        paths[kind] = []
        for i, (pid, cam) in enumerate(labels):
            path = folder / "{}{:02d}_{}_c{}.png".format(kind, i, pid, cam)
            Image.new("RGB", (20 + i, 40 + 2 * i), _colour(offset + i)).save(path)
            paths[kind].append(str(path))
    colours = [_colour(i) for i in range(len(q_labels) + len(g_labels))]
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
# the ranking, the rows and AP, from the definitions (slow loops)
# --------------------------------------------------------------------------------------------------
def slow_cosine(a, b):
    dot = sum(float(x) * float(y) for x, y in zip(a, b))
    na = math.sqrt(sum(float(x) ** 2 for x in a))
    nb = math.sqrt(sum(float(y) ** 2 for y in b))
    return 1.0 - dot / (na * nb)


def slow_sorted(q_feats, g_feats, i, check_ties=True):
    """[(distance, gallery index)] of query ``i``, closest first, equal distances by gallery index."""
    dists = sorted((slow_cosine(q_feats[i], g_feats[j]), j) for j in range(len(g_feats)))
    if check_ties:
        values = [d for d, _ in dists]
        assert all(b - a > 1e-5 for a, b in zip(values, values[1:])), "test data has near ties"
    return dists


def slow_ranking(q_feats, g_feats, i, q_labels=QUERY_LABELS, g_labels=GALLERY_LABELS, check_ties=True):
    """Gallery indices of query ``i`` by distance with its junk left out, and its AP (None: no match)."""
    pid, cam = q_labels[i]
    kept = [j for _, j in slow_sorted(q_feats, g_feats, i, check_ties) if g_labels[j] != (pid, cam)]
    hits, precisions = 0, []
    for position, j in enumerate(kept, start=1):
        if g_labels[j][0] == pid:
            hits += 1
            precisions.append(hits / position)
    return kept, (sum(precisions) / len(precisions) if precisions else None)


def slow_layout(q_feats, g_feats, i, k, junk="show", q_labels=QUERY_LABELS, g_labels=GALLERY_LABELS,
                check_ties=True):
    """Query ``i``'s row as the requirement defines it: [(gallery index, frame colour, rank or None)].

    The first k gallery images that are not junk take ranks 1..k (green: same identity, red: other); with
    ``junk`` "show" every junk image (same identity and camera) no farther than the k-th ranked one (every
    junk image when fewer than k are ranked) is added, grey and without rank; all by (distance, index).
    """
    pid, cam = q_labels[i]
    dists = slow_sorted(q_feats, g_feats, i, check_ties)
    kept = [d for d, j in dists if g_labels[j] != (pid, cam)]
    limit = kept[k - 1] if len(kept) >= k else math.inf
    layout, rank = [], 0
    for d, j in dists:
        if g_labels[j] == (pid, cam):
            if junk == "show" and d <= limit:
                layout.append((j, JUNK, None))
        elif rank < k:
            rank += 1
            layout.append((j, CORRECT if g_labels[j][0] == pid else WRONG, rank))
    return layout


def expected_order(q_feats, g_feats, sort):
    aps = {i: slow_ranking(q_feats, g_feats, i)[1] for i in range(len(QUERY_LABELS))}
    valid = sorted((ap, i) for i, ap in aps.items() if ap is not None)
    values = [ap for ap, _ in valid]
    assert all(b - a > 1e-6 for a, b in zip(values, values[1:])), "test data has equal APs"
    order = [i for _, i in valid]
    return order if sort == "worst" else order[::-1]


def expected_columns(layouts, k):
    """Gallery columns of a picture: its longest row, at least k (the rule of grid.py's docstring)."""
    return max([k] + [len(layout) for layout in layouts])


# --------------------------------------------------------------------------------------------------
# reading a grid back
# --------------------------------------------------------------------------------------------------
def cell_origin(row, col):
    """Top-left corner of a cell, from the layout documented in fastreid_ewth.visualize.grid."""
    cell_w = TILE[1] + 2 * Grid.FRAME
    cell_h = TILE[0] + 2 * Grid.FRAME + Grid.CAPTION
    x = Grid.MARGIN + Grid.LABEL + (0 if col == 0 else cell_w + Grid.QUERY_GAP + (col - 1) * (cell_w + Grid.GAP))
    return x, Grid.MARGIN + Grid.HEADER + row * (cell_h + Grid.ROW_GAP)


def expected_size(rows, columns):
    cell_w = TILE[1] + 2 * Grid.FRAME
    cell_h = TILE[0] + 2 * Grid.FRAME + Grid.CAPTION
    return (2 * Grid.MARGIN + Grid.LABEL + cell_w + Grid.QUERY_GAP + columns * cell_w + (columns - 1) * Grid.GAP,
            2 * Grid.MARGIN + Grid.HEADER + rows * cell_h + (rows - 1) * Grid.ROW_GAP)


def read_cell(image, row, col):
    """(frame colour, image colour) of a cell: a pixel in the frame's middle and the tile's centre."""
    x, y = cell_origin(row, col)
    frame = image.getpixel((x + Grid.FRAME // 2, y + Grid.FRAME + TILE[0] // 2))
    centre = image.getpixel((x + Grid.FRAME + TILE[1] // 2, y + Grid.FRAME + TILE[0] // 2))
    return tuple(frame), tuple(centre)


def read_row(image, row, columns, num_query=len(QUERY_LABELS)):
    """(query image index, [(gallery index, frame colour)] of the filled cells) of a row, checking that
    the filled cells come first and the rest are empty."""
    frame, centre = read_cell(image, row, 0)
    assert frame == QUERY
    by_colour = {_colour(i): i for i in range(num_query + 40)}
    query = by_colour[centre]
    assert query < num_query
    tiles, empty = [], False
    for col in range(1, columns + 1):
        frame, centre = read_cell(image, row, col)
        if frame == BACKGROUND:
            assert centre == BACKGROUND, "row {} col {}".format(row, col)
            empty = True
            continue
        assert not empty, "row {}: a filled cell after an empty one (col {})".format(row, col)
        tiles.append((by_colour[centre] - num_query, frame))
    return query, tiles


def assert_row(image, row, columns, layout, query, num_query=len(QUERY_LABELS)):
    """Row ``row`` of ``image`` shows ``query`` and exactly the tiles of ``layout``, framed as it says."""
    shown_query, tiles = read_row(image, row, columns, num_query)
    assert shown_query == query
    assert tiles == [(j, colour) for j, colour, _ in layout], "row {}".format(row)


def open_png(path):
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.convert("RGB")


def _junk_flag(junk):
    return [] if junk == "show" else ["--junk", junk]  # "show" is the default


# --------------------------------------------------------------------------------------------------
# rank lists
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("junk", ["show", "hide"])
@pytest.mark.parametrize("sort", ["worst", "best"])
def test_ranklist_rows_and_frames(case, tmp_path, sort, junk, capsys):
    out = tmp_path / "out"
    k = 5
    assert main(case.args(out, "A", "-k", str(k), "--sort", sort, "--skip", "tsne", "distances", "roc",
                          *_junk_flag(junk))) == 0
    q_feats, g_feats = case.feats["A"]
    order = expected_order(q_feats, g_feats, sort)
    assert len(order) == 4  # query 4 has no correct match: not sorted, not shown
    layouts = [slow_layout(q_feats, g_feats, q, k, junk) for q in order]
    columns = expected_columns(layouts, k)
    assert columns == (k + 2 if junk == "show" else k)  # query 3 has two junk images, closest to it
    image = open_png(out / "ranklist.png")
    assert image.size == expected_size(len(order), columns)
    for row, (query, layout) in enumerate(zip(order, layouts)):
        assert_row(image, row, columns, layout, query)
    printed = capsys.readouterr().out
    assert str(out / "ranklist.png") in printed and str(out / "index.html") in printed


def test_junk_comes_first_in_this_data(case):
    """The data puts each query's junk closest to it: shown, it opens the row, grey and without a rank;
    the ranked tiles after it are the kept ranking's first k, ranks 1..k, as without junk."""
    q_feats, g_feats = case.feats["A"]
    k = 4
    for i, (pid, cam) in enumerate(QUERY_LABELS):
        junk = [j for j, lab in enumerate(GALLERY_LABELS) if lab == (pid, cam)]
        assert junk
        nearest = min(range(len(GALLERY_LABELS)), key=lambda j: slow_cosine(q_feats[i], g_feats[j]))
        assert nearest in junk
        kept, _ = slow_ranking(q_feats, g_feats, i)
        assert not set(junk) & set(kept)
        shown = slow_layout(q_feats, g_feats, i, k, "show")
        assert sorted(j for j, _, _ in shown[:len(junk)]) == junk
        assert all(colour == JUNK and rank is None for _, colour, rank in shown[:len(junk)])
        ranked = [(j, rank) for j, _, rank in shown if rank is not None]
        assert ranked == list(zip(kept[:k], range(1, k + 1)))
        assert [(j, rank) for j, _, rank in slow_layout(q_feats, g_feats, i, k, "hide")] == ranked


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
        # top-k not full: every junk image of the query is in range
        junk = [j for j, _, rank in slow_layout(q.feats, g.feats, i, len(g)) if rank is None]
        assert len(junk) == sum(1 for lab in GALLERY_LABELS if lab == QUERY_LABELS[i])
        assert ranking.junk_index[i, :ranking.junk_count[i]].tolist() == junk
        assert (ranking.junk_index[i, ranking.junk_count[i]:] == -1).all()
    # positives: same identity, other camera; negatives: other identity (all of them: few)
    num_pos = sum(1 for p, c in QUERY_LABELS for gp, gc in GALLERY_LABELS if gp == p and gc != c)
    num_neg = sum(1 for p, _ in QUERY_LABELS for gp, _ in GALLERY_LABELS if gp != p)
    assert ranking.pos_dist.size == num_pos and ranking.neg_dist.size == ranking.num_neg == num_neg
    sampled = rank_model(q, g, "cosine", k=3, max_negatives=7, seed=1)
    assert sampled.neg_dist.size == 7 and sampled.num_neg == num_neg
    assert set(np.round(sampled.neg_dist, 6)) <= set(np.round(ranking.neg_dist, 6))
    for i in range(len(q)):
        layout = slow_layout(q.feats, g.feats, i, 3)
        assert [(j, rank) for j, _, rank in sampled.row(i)] == [(j, rank) for j, _, rank in layout]
        assert [j for j, _, _ in sampled.row(i, junk=False)] == slow_ranking(q.feats, g.feats, i)[0][:3]


def test_queries_by_index_and_pages(case, tmp_path):
    """--queries shows the given rows in order, also one without a match; --per-page splits into pages,
    all as wide as the longest row of any page."""
    out = tmp_path / "out"
    chosen = [4, 0, 3, 2, 1]
    k = 3
    assert main(case.args(out, "A", "-k", str(k), "--queries", *map(str, chosen), "--per-page", "2",
                          "--skip", "tsne", "distances", "roc")) == 0
    q_feats, g_feats = case.feats["A"]
    layouts = {q: slow_layout(q_feats, g_feats, q, k) for q in chosen}
    columns = expected_columns(layouts.values(), k)
    assert columns == k + 2 == len(layouts[4]) == len(layouts[3])  # query 4 (no match) and 3: two junk each
    names = ["ranklist-p1.png", "ranklist-p2.png", "ranklist-p3.png"]
    assert not (out / "ranklist.png").exists()
    for page, name in enumerate(names):
        image = open_png(out / name)
        rows = chosen[2 * page:2 * page + 2]
        assert image.size == expected_size(len(rows), columns)
        for row, query in enumerate(rows):
            assert_row(image, row, columns, layouts[query], query)
    index = (out / "index.html").read_text()
    for name in names:
        assert 'href="{}"'.format(name) in index


@pytest.mark.parametrize("junk", ["show", "hide"])
def test_k_larger_than_kept_gallery(case, tmp_path, junk):
    """Every query has junk, so its kept gallery is shorter than k = the gallery: hidden, the row ends in
    empty cells; shown, every junk image is in range and the row is the whole gallery."""
    out = tmp_path / "out"
    k = len(GALLERY_LABELS)
    assert main(case.args(out, "A", "-k", str(k), "--num-queries", "2", "--skip", "tsne", "distances", "roc",
                          *_junk_flag(junk))) == 0
    q_feats, g_feats = case.feats["A"]
    image = open_png(out / "ranklist.png")
    assert image.size == expected_size(2, k)
    for row, query in enumerate(expected_order(q_feats, g_feats, "worst")[:2]):
        layout = slow_layout(q_feats, g_feats, query, k, junk)
        assert (len(layout) == k) == (junk == "show")
        assert_row(image, row, k, layout, query)


# --------------------------------------------------------------------------------------------------
# hand-chosen features: junk between, level with and beyond the ranked tiles
# --------------------------------------------------------------------------------------------------
# Unit vectors at these angles (degrees); cosine distance 1 - cos(angle between). Query 0 (pid 1, cam 0)
# points at 0 degrees, query 1 (pid 2, cam 1) at 180. Gallery: (pid, camid, angle of model A, of model B).
HAND_QUERY = [(1, 0, 0), (2, 1, 180)]
HAND_GALLERY = [
    (1, 0, 4, 4),      # 0: junk of query 0, closest to it
    (7, 1, 10, 10),    # 1: wrong
    (1, 1, 20, 20),    # 2: correct
    (1, 0, 30, 30),    # 3: junk of query 0, between ranks 2 and 3
    (7, 2, 40, 40),    # 4: wrong
    (1, 0, 40, 40),    # 5: junk of query 0 at exactly the distance of 4 (same vector): after it, shown
    (1, 0, 50, 35),    # 6: junk of query 0: A beyond rank 3 (not shown for k=3), B between 3 and 4
    (1, 2, 60, 60),    # 7: correct
    (2, 1, 170, 170),  # 8: junk of query 1, between ranks 1 and 2
    (2, 0, 178, 178),  # 9: correct, closest to query 1
    (8, 0, 160, 160),  # 10: wrong
    (2, 1, 100, 165),  # 11: junk of query 1: A far beyond, B between 8 and 10
    (2, 2, 150, 150),  # 12: correct
]
HAND_Q_LABELS = [(p, c) for p, c, _ in HAND_QUERY]
HAND_G_LABELS = [(p, c) for p, c, _, _ in HAND_GALLERY]
J, C, W = JUNK, CORRECT, WRONG
# the rows for k = 3, written out: (gallery index, frame, rank)
HAND_ROWS = {
    "A": [[(0, J, None), (1, W, 1), (2, C, 2), (3, J, None), (4, W, 3), (5, J, None)],
          [(9, C, 1), (8, J, None), (10, W, 2), (12, C, 3)]],
    "B": [[(0, J, None), (1, W, 1), (2, C, 2), (3, J, None), (6, J, None), (4, W, 3), (5, J, None)],
          [(9, C, 1), (8, J, None), (11, J, None), (10, W, 2), (12, C, 3)]],
}


def _unit(degrees):
    if degrees == 0:
        return [1.0, 0.0]
    if degrees == 180:
        return [-1.0, 0.0]
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


class HandCase:
    def __init__(self, tmp_path):
        self.paths = _write_images(tmp_path / "img", HAND_Q_LABELS, HAND_G_LABELS)
        q = np.array([_unit(a) for _, _, a in HAND_QUERY], dtype=np.float32)
        self.feats, self.files = {}, {}
        for model, column in (("A", 2), ("B", 3)):
            g = np.array([_unit(row[column]) for row in HAND_GALLERY], dtype=np.float32)
            self.feats[model] = (q, g)
            self.files[model] = (_save(tmp_path / model, q, HAND_Q_LABELS, self.paths["q"], "query.npz"),
                                 _save(tmp_path / model, g, HAND_G_LABELS, self.paths["g"], "gallery.npz"))

    def args(self, out, *extra):
        (qa, ga), (qb, gb) = self.files["A"], self.files["B"]
        return ["--query", qa, "--gallery", ga, "--output", str(out), "--tile-size", str(TILE[0]), str(TILE[1]),
                "--queries", "0", "1", "-k", "3", "--skip", "tsne", *extra]

    def compare_args(self, out, *extra):
        qb, gb = self.files["B"]
        return self.args(out, "--compare-query", qb, "--compare-gallery", gb, "--names", "A", "B", *extra)

    def layout(self, model, query, junk="show", k=3):
        return slow_layout(*self.feats[model], query, k, junk, HAND_Q_LABELS, HAND_G_LABELS, check_ties=False)


@pytest.fixture
def hand(tmp_path):
    return HandCase(tmp_path)


def test_hand_rows_from_the_definition(hand):
    """The rows written out above are what the definition gives for these features."""
    for model, rows in HAND_ROWS.items():
        for query, row in enumerate(rows):
            assert hand.layout(model, query) == row
            assert hand.layout(model, query, "hide") == [t for t in row if t[2] is not None]


def test_hand_ranking(hand):
    from fastreid_ewth.inference.embeddings import load_embeddings

    for model, rows in HAND_ROWS.items():
        q, g = (load_embeddings(p) for p in hand.files[model])
        ranking = rank_model(q, g, "cosine", k=3, max_negatives=10 ** 6)
        for query, row in enumerate(rows):
            assert [(j, rank) for j, _, rank in ranking.row(query)] == [(j, rank) for j, _, rank in row]
            assert ranking.junk_count[query] == sum(1 for t in row if t[2] is None)
            assert [j for j, _, _ in ranking.row(query, junk=False)] == ranking.top_index[query].tolist()
            # junk takes no rank: AP and first match are the evaluator's
            kept, ap = slow_ranking(q.feats, g.feats, query, HAND_Q_LABELS, HAND_G_LABELS, check_ties=False)
            assert ranking.top_index[query].tolist() == kept[:3]
            assert ranking.ap[query] == pytest.approx(ap, abs=1e-9)
        result = evaluate_features(q.feats, g.feats, q.pids, g.pids, q.camids, g.camids, "cosine")
        assert ranking.mAP == pytest.approx(result["mAP"], abs=1e-12)
    a = rank_model(*(load_embeddings(p) for p in hand.files["A"]), "cosine", k=3, max_negatives=10)
    assert a.junk_index.tolist() == [[0, 3, 5], [8, -1, -1]]


@pytest.mark.parametrize("junk", ["show", "hide"])
def test_hand_ranklist_and_compare(hand, tmp_path, junk):
    """Junk drawn grey in its distance position, rows of different lengths, the grid as wide as the
    longest row (compare: of both models); hidden, the old layout of k columns."""
    out = tmp_path / "out"
    assert main(hand.compare_args(out, *_junk_flag(junk))) == 0
    k, nq = 3, len(HAND_QUERY)
    rows = {m: [hand.layout(m, q, junk) for q in range(nq)] for m in ("A", "B")}
    if junk == "show":
        assert [[len(r) for r in rows[m]] for m in ("A", "B")] == [[6, 4], [7, 5]]
    else:
        assert all(len(r) == k for m in rows for r in rows[m])
    image = open_png(out / "ranklist.png")
    columns = expected_columns(rows["A"], k)
    assert columns == (6 if junk == "show" else k)
    assert image.size == expected_size(nq, columns)
    for q in range(nq):
        assert_row(image, q, columns, rows["A"][q], q, nq)
    image = open_png(out / "compare.png")
    columns = expected_columns(rows["A"] + rows["B"], k)
    assert columns == (7 if junk == "show" else k)
    assert image.size == expected_size(2 * nq, columns)
    for q in range(nq):
        assert_row(image, 2 * q, columns, rows["A"][q], q, nq)
        assert_row(image, 2 * q + 1, columns, rows["B"][q], q, nq)
    index = (out / "index.html").read_text()
    assert ("grey = junk" in index) == (junk == "show")


def test_hand_junk_takes_no_rank(hand, tmp_path):
    """Shown or hidden, the ranked tiles are the same images in the same order, captioned #1..#k; junk
    tiles are captioned 'junk' and carry no rank."""
    from fastreid_ewth.visualize import build_parser, prepare
    from fastreid_ewth.visualize.cli import _rows

    plan = prepare(build_parser().parse_args(hand.compare_args(tmp_path / "out")))
    for model in plan.models:
        shown = _rows(model, plan.queries, "show", True)
        hidden = _rows(model, plan.queries, "hide", True)
        for q, row_shown, row_hidden in zip(plan.queries, shown, hidden):
            expected = HAND_ROWS[model.name][q]
            assert [t.path for t in row_shown.tiles] == [hand.paths["g"][j] for j, _, _ in expected]
            assert [t.colour for t in row_shown.tiles] == [colour for _, colour, _ in expected]
            ranked = [t for t in row_shown.tiles if t.colour != JUNK]
            assert [t.caption for t in ranked] == [t.caption for t in row_hidden.tiles]
            assert [t.caption[0].split()[0] for t in ranked] == ["#1", "#2", "#3"]
            for t in row_shown.tiles:
                if t.colour == JUNK:
                    assert t.caption[0].split()[0] == "junk" and "#" not in " ".join(t.caption)
            n_junk = len(row_shown.tiles) - 3
            assert "{} junk shown (grey)".format(n_junk) in row_shown.label
            assert "{} junk hidden".format(n_junk) in row_hidden.label


def test_hand_hidden_ranks_match_shown(hand, tmp_path):
    """Read from the pictures: the non-grey tiles of a --junk show row are the --junk hide row."""
    shown_out, hidden_out = tmp_path / "show", tmp_path / "hide"
    assert main(hand.args(shown_out)) == 0
    assert main(hand.args(hidden_out, "--junk", "hide")) == 0
    shown, hidden = open_png(shown_out / "ranklist.png"), open_png(hidden_out / "ranklist.png")
    nq = len(HAND_QUERY)
    assert shown.size == expected_size(nq, 6) and hidden.size == expected_size(nq, 3)
    for q in range(nq):
        _, tiles_shown = read_row(shown, q, 6, nq)
        _, tiles_hidden = read_row(hidden, q, 3, nq)
        assert [t for t in tiles_shown if t[1] != JUNK] == tiles_hidden
        assert len(tiles_hidden) == 3 and JUNK not in [f for _, f in tiles_hidden]

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
    rows_a = [slow_layout(*fa, q, k) for q in order]
    rows_b = [slow_layout(*fb, q, k) for q in order]
    columns = expected_columns(rows_a + rows_b, k)
    image = open_png(out / "compare.png")
    assert image.size == expected_size(2 * len(order), columns)
    for n, query in enumerate(order):
        assert_row(image, 2 * n, columns, rows_a[n], query)
        assert_row(image, 2 * n + 1, columns, rows_b[n], query)
    # rank list of model A alone, and both models' curves
    assert open_png(out / "ranklist.png").size == expected_size(len(order), expected_columns(rows_a, k))
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
    first, frame, _ = slow_layout(q_feats, g_feats, query, 3)[0]  # a junk image: those are read as well
    assert frame == JUNK
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
    x, y = cell_origin(0, 1)
    assert image.getpixel((x + Grid.FRAME + 2, y + Grid.FRAME + TILE[0] // 2)) == PLACEHOLDER_COLOUR
    assert read_cell(image, 0, 1)[0] == JUNK


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


@pytest.mark.heavy
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
