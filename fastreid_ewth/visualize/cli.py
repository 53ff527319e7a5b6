"""Command line of ``tools/visualize.py``: pictures of one model's (or two models') query and gallery embeddings.

Three steps, so that bad input never leaves a half-written output folder:

1. :func:`prepare`: check every option and input file, rank the queries, read the images; raises
   :class:`VisualizeError` (or the loader's / image reader's ``ValueError``) naming the bad value and the fix;
2. :func:`render`: draw every picture into memory (PNG bytes) and the index page;
3. :func:`write`: create the output folder, write each file atomically, then the TensorBoard projector files.

:func:`main` runs the three and prints where the files are.
"""
import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ..evaluation.distance import METRICS, check_metric
from ..files import atomic_write
from ..inference.embeddings import load_embeddings
from . import grid as grid_mod
from .images import MISSING, ImageError, ImageStore
from .ranking import SORTS, rank_model, select_queries
from .report import Section, index_html

__all__ = ["main", "build_parser", "prepare", "render", "write", "VisualizeError", "PICTURES", "INDEX",
           "JUNK_MODES"]

#: pictures that ``--skip`` can leave out (``compare`` is drawn only with a second model)
PICTURES = ("ranklist", "compare", "tsne", "distances", "roc")
INDEX = "index.html"
PROJECTOR = "projector"
#: what ``--junk`` may say: draw the junk within the shown range (grey, no rank) or only count it
JUNK_MODES = ("show", "hide")

_SORT_TEXT = {"worst": "lowest AP first", "best": "highest AP first", "diff": "largest AP difference first"}


class VisualizeError(ValueError):
    """A bad option or input file, found before anything is written."""


def build_parser(prog="tools/visualize.py"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Pictures of query and gallery embedding files (tools/embed.py's query.npz and gallery.npz): "
                    "rank lists with correct / wrong matches / junk framed green / red / grey, a side-by-side "
                    "comparison of two models, a t-SNE map, distance histograms and ROC curves, and optionally "
                    "TensorBoard's embedding projector. Writes PNG files and OUT/index.html, which links and "
                    "explains them. Distances and AP are the evaluator's (Market1501 protocol: gallery images of "
                    "the query's identity and camera, junk, are left out of its ranking; the rank lists draw them "
                    "framed grey and without a rank, or leave them out with --junk hide).",
        epilog="Examples: {0} --query emb/query.npz --gallery emb/gallery.npz --output vis ;  "
               "{0} --query a/query.npz --gallery a/gallery.npz --compare-query b/query.npz "
               "--compare-gallery b/gallery.npz --names BoT AGW --sort diff --output vis-ab ;  "
               "{0} ... --queries 0 5 17 -k 20 --projector".format(prog))
    io_ = p.add_argument_group("input and output")
    io_.add_argument("--query", required=True, metavar="NPZ", help="query embedding file (model A)")
    io_.add_argument("--gallery", required=True, metavar="NPZ", help="gallery embedding file (model A)")
    io_.add_argument("--output", required=True, metavar="DIR",
                     help="folder for the PNG files, index.html and projector/ (created; files there are replaced)")
    io_.add_argument("--compare-query", metavar="NPZ", help="query embedding file of a second model B: the "
                                                            "same images as --query, in the same order")
    io_.add_argument("--compare-gallery", metavar="NPZ", help="gallery embedding file of model B (same images "
                                                              "as --gallery)")
    io_.add_argument("--names", nargs="+", metavar="NAME",
                     help="model names for titles and legends: one, or two with --compare-* (default: the "
                          "folders of the query files, or A and B when they are the same)")
    io_.add_argument("--image-root", metavar="DIR",
                     help="folder that relative image paths of the embedding files are read from (default: the "
                          "current folder)")
    io_.add_argument("--missing-images", choices=MISSING, default="error",
                     help="an image that is missing or unreadable: error (default; names the file, writes "
                          "nothing) or placeholder (grey tile with a cross, and a warning)")
    io_.add_argument("--skip", nargs="+", choices=PICTURES, default=[], metavar="PICTURE",
                     help="pictures to leave out: {}".format(", ".join(PICTURES)))
    io_.add_argument("--metric", default="cosine",
                     help="distance: {} (squared), as fastreid's TEST.METRIC (default: %(default)s)".format(
                         " or ".join(METRICS)))

    rl = p.add_argument_group("rank lists (ranklist.png, compare.png)")
    rl.add_argument("-k", "--topk", type=int, default=10, metavar="K",
                    help="ranked gallery images per query, junk not counted (default: %(default)s)")
    rl.add_argument("--junk", choices=JUNK_MODES, default="show",
                    help="junk (gallery images of the query's identity and camera, which the evaluator leaves out "
                         "of its ranking): show (default) draws those no farther from the query than its k-th "
                         "ranked image in their place by distance, framed grey, captioned 'junk', without a rank "
                         "(the k ranked images keep ranks 1..k; rows get longer and the grid as wide as its "
                         "longest row); hide leaves them out and only counts them in the row label")
    rl.add_argument("--sort", choices=SORTS, default="worst",
                    help="which queries: worst (lowest AP first, default), best (highest first), diff (largest AP "
                         "difference between the two models first; needs --compare-*). Only queries with a "
                         "correct match in the gallery (those the evaluator counts) are sorted")
    rl.add_argument("--queries", nargs="+", type=int, metavar="I",
                    help="show these query indices (0-based rows of the query file), in this order, instead")
    rl.add_argument("--num-queries", type=int, default=8, metavar="N",
                    help="queries shown with --sort (default: %(default)s)")
    rl.add_argument("--per-page", type=int, default=10, metavar="N",
                    help="queries per PNG; more make ranklist-p1.png, ranklist-p2.png, ... (default: %(default)s)")
    rl.add_argument("--tile-size", nargs=2, type=int, default=[128, 64], metavar=("H", "W"),
                    help="every image is resized to H x W pixels (default: 128 64)")

    ts = p.add_argument_group("t-SNE (tsne.png)")
    ts.add_argument("--tsne-ids", type=int, default=30, metavar="N",
                    help="identities drawn (seeded) from the query set's; all their query and gallery images are "
                         "mapped; 0 = every identity (slow on a full test set) (default: %(default)s)")
    ts.add_argument("--tsne-iter", type=int, default=1000, metavar="N",
                    help="t-SNE optimisation iterations, at least 250 (default: %(default)s)")
    ts.add_argument("--tsne-perplexity", type=float, default=30.0, metavar="P",
                    help="t-SNE perplexity, clipped to (images - 1) / 3 (default: %(default)s)")

    ds = p.add_argument_group("distances.png, roc.png")
    ds.add_argument("--max-negatives", type=int, default=200000, metavar="N",
                    help="different-identity pairs kept (a seeded uniform sample when there are more; all "
                         "same-identity pairs are kept) (default: %(default)s)")

    pj = p.add_argument_group("TensorBoard projector")
    pj.add_argument("--projector", action="store_true",
                    help="also write OUT/projector for `tensorboard --logdir OUT/projector` (features, "
                         "pid/camid/set metadata, thumbnails)")
    pj.add_argument("--projector-max", type=int, default=2000, metavar="N",
                    help="images in the projector (a seeded sample of query + gallery; 0 = all) "
                         "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of every sample and of t-SNE (default: %(default)s)")
    return p


@dataclass
class Model:
    name: str
    query: object
    gallery: object
    ranking: object = None
    tsne_xy: object = None


@dataclass
class Plan:
    """Everything :func:`render` needs, checked."""
    args: argparse.Namespace
    models: List[Model]
    pictures: List[str]
    store: ImageStore
    queries: List[int] = field(default_factory=list)
    tsne_query: Optional[np.ndarray] = None
    tsne_gallery: Optional[np.ndarray] = None
    projector_rows: list = field(default_factory=list)
    thumbnails: Optional[np.ndarray] = None
    notes: List[str] = field(default_factory=list)


def _check_options(args):
    def positive(name, value, minimum=1, fix=""):
        if value < minimum:
            raise VisualizeError("{} must be at least {}, got {}{}".format(name, minimum, value, fix))

    positive("-k/--topk", args.topk, fix=": the number of gallery images shown per query")
    positive("--num-queries", args.num_queries)
    positive("--per-page", args.per_page)
    positive("--tile-size H and W", min(args.tile_size), 8, fix=" (e.g. --tile-size 128 64)")
    positive("--tsne-ids", args.tsne_ids, 0, fix=" (0 = every identity)")
    from .plots import MIN_TSNE_ITER

    positive("--tsne-iter", args.tsne_iter, MIN_TSNE_ITER, fix=" (scikit-learn's TSNE refuses fewer)")
    positive("--max-negatives", args.max_negatives)
    positive("--projector-max", args.projector_max, 0, fix=" (0 = every image)")
    if not args.tsne_perplexity > 0:
        raise VisualizeError("--tsne-perplexity must be positive, got {}".format(args.tsne_perplexity))
    try:
        check_metric(args.metric)
    except ValueError as e:
        raise VisualizeError("--metric: {}".format(e)) from None
    if (args.compare_query is None) != (args.compare_gallery is None):
        raise VisualizeError("--compare-query and --compare-gallery go together (model B's query and gallery "
                             "files); got only {}".format("--compare-query" if args.compare_gallery is None
                                                          else "--compare-gallery"))
    two = args.compare_query is not None
    if args.sort == "diff" and not two:
        raise VisualizeError("--sort diff orders queries by the AP difference of two models: pass "
                             "--compare-query B/query.npz --compare-gallery B/gallery.npz, or use --sort worst/best")
    if args.names is not None and len(args.names) != (2 if two else 1):
        raise VisualizeError("--names takes {} for {} (got {}: {})".format(
            "two names (model A, model B)" if two else "one name", "two models" if two else "one model",
            len(args.names), " ".join(args.names)))
    if args.names is not None and two and args.names[0] == args.names[1]:
        raise VisualizeError("--names gives both models the name {!r}; give them different names".format(
            args.names[0]))
    if args.image_root is not None and not os.path.isdir(args.image_root):
        raise VisualizeError("--image-root {!r} is not a folder".format(args.image_root))
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise VisualizeError("--output {!r} is a file; pass a folder (it is created if missing)".format(args.output))


def _default_names(args):
    if args.names:
        return list(args.names)
    folders = [os.path.basename(os.path.dirname(os.path.abspath(p))) or "model"
               for p in [args.query] + ([args.compare_query] if args.compare_query else [])]
    if len(folders) == 2 and folders[0] == folders[1]:
        return ["A", "B"]
    return folders


def _load(path, what):
    try:
        return load_embeddings(path)
    except (FileNotFoundError, ValueError) as e:  # missing, damaged, or not an embedding file
        raise VisualizeError("{}: {}".format(what, e)) from None


def _check_pair(query, gallery, query_opt, gallery_opt):
    if query.feats.shape[1] != gallery.feats.shape[1]:
        raise VisualizeError("{} {!r} has {}-dimensional features but {} {!r} has {}: query and gallery must "
                             "be embedded by the same model".format(query_opt, query.source, query.feats.shape[1],
                                                                    gallery_opt, gallery.source,
                                                                    gallery.feats.shape[1]))
    for opt, emb in ((query_opt, query), (gallery_opt, gallery)):
        if len(emb) == 0:
            raise VisualizeError("{} {!r} holds no image".format(opt, emb.source))


def _check_same_images(a, b, opt_a, opt_b):
    """Model B's file must describe model A's images: same paths, pids and camids in the same order."""
    if len(a) != len(b):
        raise VisualizeError("{} {!r} has {} images but {} {!r} has {}: the two models must be embedded on the "
                             "same images, in the same order".format(opt_a, a.source, len(a), opt_b, b.source,
                                                                     len(b)))
    for key in ("paths", "pids", "camids"):
        va, vb = getattr(a, key), getattr(b, key)
        differ = np.flatnonzero(va != vb)
        if differ.size:
            i = int(differ[0])
            raise VisualizeError("{} {!r} and {} {!r} differ in {} at {} of {} rows (first at row {}: {!r} vs "
                                 "{!r}): the two models must be embedded on the same images, in the same order".format(
                                     opt_a, a.source, opt_b, b.source, key, differ.size, len(a), i,
                                     va[i].item(), vb[i].item()))


def _need(module, picture, extra):
    try:
        __import__(module)
    except ImportError:
        raise VisualizeError("{} needs {} (pip install {}), or leave it out with --skip {}".format(
            picture, module, extra, picture)) from None


def prepare(args):
    """Check ``args`` (from :func:`build_parser`) and the files, rank, choose queries -> :class:`Plan`."""
    _check_options(args)
    names = _default_names(args)
    models = [Model(names[0], _load(args.query, "--query"), _load(args.gallery, "--gallery"))]
    _check_pair(models[0].query, models[0].gallery, "--query", "--gallery")
    if args.compare_query is not None:
        b = Model(names[1], _load(args.compare_query, "--compare-query"),
                  _load(args.compare_gallery, "--compare-gallery"))
        _check_pair(b.query, b.gallery, "--compare-query", "--compare-gallery")
        _check_same_images(models[0].query, b.query, "--query", "--compare-query")
        _check_same_images(models[0].gallery, b.gallery, "--gallery", "--compare-gallery")
        models.append(b)

    pictures = [p for p in PICTURES if p not in args.skip and (p != "compare" or len(models) == 2)]
    if not pictures and not args.projector:
        raise VisualizeError("--skip {} leaves nothing to draw; skip fewer pictures or add --projector".format(
            " ".join(args.skip)))
    if pictures:  # every picture needs identities and cameras
        for opt, emb in (("--query", models[0].query), ("--gallery", models[0].gallery)):
            if not emb.labelled:
                unknown = int(((emb.pids < 0) | (emb.camids < 0)).sum())
                raise VisualizeError(
                    "{} {!r} is not labelled ({} of {} images have pid or camid -1, e.g. embedded from a plain "
                    "folder of images): {} need identities and cameras. Embed a dataset's query and gallery sets, "
                    "or pass --skip {} --projector to only browse the features in TensorBoard".format(
                        opt, emb.source, unknown, len(emb), ", ".join(pictures), " ".join(PICTURES)))
    if any(p in ("tsne", "distances", "roc") for p in pictures):
        _need("matplotlib", next(p for p in pictures if p in ("tsne", "distances", "roc")), "matplotlib")
    for picture in ("tsne", "roc"):
        if picture in pictures:
            _need("sklearn", picture, "scikit-learn")
    if args.projector:
        _need("tensorboard", "--projector", "tensorboard")

    query, gallery = models[0].query, models[0].gallery
    ranked = [p for p in pictures if p in ("ranklist", "compare", "distances", "roc")]
    if ranked and args.topk > len(gallery):
        raise VisualizeError("-k/--topk {} is larger than the gallery of {} images; pass -k {} or less".format(
            args.topk, len(gallery), len(gallery)))
    if args.queries is not None:
        bad = [i for i in args.queries if not 0 <= i < len(query)]
        if bad:
            raise VisualizeError("--queries {}: out of range; the query file {!r} has {} images, indices 0 to "
                                 "{}".format(" ".join(map(str, bad)), query.source, len(query), len(query) - 1))

    store = ImageStore(args.tile_size, args.missing_images, args.image_root)
    plan = Plan(args=args, models=models, pictures=pictures, store=store)
    if "tsne" in pictures:
        from .plots import MIN_TSNE_POINTS, tsne_subset

        plan.tsne_query, plan.tsne_gallery, ids = tsne_subset(query, gallery, args.tsne_ids, args.seed)
        count = plan.tsne_query.size + plan.tsne_gallery.size
        if count < MIN_TSNE_POINTS:
            raise VisualizeError("t-SNE: the {} chosen identities have {} images, fewer than {}; raise --tsne-ids "
                                 "(0 = all) or pass --skip tsne".format(ids.size, count, MIN_TSNE_POINTS))
    if ranked:
        for m in models:
            m.ranking = rank_model(m.query, m.gallery, args.metric, args.topk, args.max_negatives, args.seed)
        if not models[0].ranking.valid.any():
            raise VisualizeError(
                "no query of {!r} has a correct match in {!r} (a gallery image of its identity from another "
                "camera): the files are not the query and gallery of one test set, or their pids/camids are "
                "wrong".format(query.source, gallery.source))
        plan.queries = select_queries([m.ranking for m in models], args.sort, args.num_queries, args.queries)
        if args.queries is None and len(plan.queries) < args.num_queries:
            plan.notes.append("{} queries asked for, {} have a correct match to sort by".format(
                args.num_queries, len(plan.queries)))
        # read every shown image now: a missing one stops here, before anything is written
        for m in models:
            if "ranklist" in pictures or "compare" in pictures:
                for q in plan.queries:
                    store.tile(m.query.paths[q])
                    for g, _, _ in m.ranking.row(q, junk=args.junk == "show"):
                        store.tile(m.gallery.paths[g])

    if "tsne" in pictures:
        from .plots import tsne_points

        for m in models:
            feats = np.concatenate([m.query.feats[plan.tsne_query], m.gallery.feats[plan.tsne_gallery]])
            m.tsne_xy = tsne_points(feats, args.metric, args.tsne_perplexity, args.tsne_iter, args.seed)

    if args.projector:
        from .projector import projector_points, projector_thumbnails

        plan.projector_rows = projector_points(len(query), len(gallery), args.projector_max, args.seed)
        plan.thumbnails = projector_thumbnails(
            [(query if s == "query" else gallery).paths[i] for s, i in plan.projector_rows], store)
    return plan


def _ap_text(ranking, q):
    return "AP {:.1f}%".format(100 * ranking.ap[q]) if ranking.valid[q] else "AP n/a: no match"


def _fmt_dist(d):
    return "{:.3f}".format(d) if abs(d) < 10 else "{:.4g}".format(d)


def _rows(model, queries, junk, with_name):
    """Rank-list rows of ``model`` for ``queries``; ``junk``: "show" or "hide" (see :meth:`Ranking.row`).

    A ranked tile is framed green (correct) or red (wrong) and captioned ``#rank distance``; a junk tile
    grey, captioned ``junk distance``. Each row holds only its own tiles: the grid pads short rows.
    """
    q_emb, g_emb, r = model.query, model.gallery, model.ranking
    rows = []
    for q in queries:
        label = ([model.name] if with_name else []) + [
            "query {}".format(q), "pid {}  cam {}".format(q_emb.pids[q], q_emb.camids[q]), _ap_text(r, q)]
        if r.valid[q]:
            label.append("first match: #{}".format(r.first_hit[q]))
        if r.junk_count[q]:
            label.append("{} junk {}".format(r.junk_count[q], "shown (grey)" if junk == "show" else "hidden"))
        tiles = []
        for g, d, rank in r.row(q, junk=junk == "show"):
            labels = "pid {} c{}".format(g_emb.pids[g], g_emb.camids[g])
            if rank is None:
                tiles.append(grid_mod.Tile(g_emb.paths[g], grid_mod.JUNK, ["junk " + _fmt_dist(d), labels]))
                continue
            colour = grid_mod.CORRECT if g_emb.pids[g] == q_emb.pids[q] else grid_mod.WRONG
            tiles.append(grid_mod.Tile(g_emb.paths[g], colour, ["#{} {}".format(rank, _fmt_dist(d)), labels]))
        query_tile = grid_mod.Tile(q_emb.paths[q], grid_mod.QUERY,
                                   ["query", "pid {} c{}".format(q_emb.pids[q], q_emb.camids[q])])
        rows.append(grid_mod.Row(label, query_tile, tiles))
    return rows


def _pages(stem, count, per_page):
    n = max(1, -(-count // per_page))
    if n == 1:
        return ["{}.png".format(stem)]
    return ["{}-p{}.png".format(stem, i + 1) for i in range(n)]


def render(plan):
    """Draw everything -> (files: {name: bytes}, sections for the index, summary table)."""
    args, models = plan.args, plan.models
    files, sections = {}, []
    order = "queries as given" if args.queries is not None else _SORT_TEXT[args.sort]
    show_junk = args.junk == "show"
    if show_junk:
        legend_tiles = [
            "Frames: blue = the query, green = correct match (same identity, other camera), red = wrong match "
            "(other identity), grey = junk (same identity and same camera as the query).",
            "Row label: query index (0-based row of the query file), its pid and camera, its AP (as the evaluator "
            "computes it), the rank of its first correct match, and how many junk images are shown in the row.",
            "Junk takes no rank, as in the evaluator: the {0} ranked tiles are numbered #1 to #{0} exactly as the "
            "evaluator ranks the gallery without the query's junk; every junk image no farther from the query "
            "than the #{0} tile is drawn where its distance puts it, framed grey and captioned 'junk' instead of "
            "a rank (junk farther away is not drawn). A row is {0} ranked tiles plus its junk tiles, so rows "
            "differ in length: the picture is as wide as its longest row (on any of its pages), shorter rows "
            "end in empty cells. --junk hide leaves junk out.".format(args.topk),
            "Tile caption: #rank (or 'junk') and distance to the query ({}); pid and camera of the gallery image. "
            "Ties in distance are shown in gallery-file order. An empty cell can also mean that the query's gallery "
            "without junk has fewer than k images.".format(args.metric),
        ]
    else:
        legend_tiles = [
            "Frames: blue = the query, green = correct match (same identity, other camera), red = wrong match "
            "(other identity). An empty cell: the query's gallery (junk left out) has fewer than k images.",
            "Row label: query index (0-based row of the query file), its pid and camera, its AP (as the evaluator "
            "computes it), the rank of its first correct match, and how many junk images (same identity and "
            "same camera as the query) were left out of the shown range.",
            "Junk images are excluded from the ranking as the evaluator does: they take no rank and (--junk "
            "hide) are not shown.",
            "Tile caption: #rank and distance to the query ({}); pid and camera of the gallery image. Ties in "
            "distance are shown in gallery-file order.".format(args.metric),
        ]
    legend = grid_mod.JUNK_LEGEND if show_junk else grid_mod.LEGEND
    per_page = args.per_page
    if "ranklist" in plan.pictures:
        m = models[0]
        names = _pages("ranklist", len(plan.queries), per_page)
        rows = _rows(m, plan.queries, args.junk, False)
        columns = grid_mod.grid_columns(rows, args.topk)  # the same width on every page
        for page, name in enumerate(names):
            title = "{}: top-{} gallery images per query{}, {} ({}){}".format(
                m.name, args.topk, " and junk" if show_junk else "", order, args.metric,
                ", page {}/{}".format(page + 1, len(names)) if len(names) > 1 else "")
            image, _ = grid_mod.render_grid(rows[page * per_page:(page + 1) * per_page], columns, args.tile_size,
                                            plan.store, title, legend=legend)
            files[name] = grid_mod.png_bytes(image)
        sections.append(Section("Rank lists ({})".format(m.name), names,
                                "One row per query ({}, {} queries): the query, then its {} closest gallery images, "
                                "closest first{}.".format(order, len(plan.queries), args.topk,
                                                          ", with the junk among them marked grey" if show_junk
                                                          else ""), legend_tiles))
    if "compare" in plan.pictures:
        a, b = models
        compare_order = order if args.queries is not None or args.sort == "diff" else order + " by " + a.name
        names = _pages("compare", len(plan.queries), per_page)
        rows = []
        for ra, rb in zip(_rows(a, plan.queries, args.junk, True), _rows(b, plan.queries, args.junk, True)):
            rows += [ra, rb]
        columns = grid_mod.grid_columns(rows, args.topk)
        for page, name in enumerate(names):
            chunk = rows[2 * page * per_page:2 * (page + 1) * per_page]
            title = "{} (upper row) vs {} (lower row): top-{}{}, {} ({}){}".format(
                a.name, b.name, args.topk, " and junk" if show_junk else "", compare_order, args.metric,
                ", page {}/{}".format(page + 1, len(names)) if len(names) > 1 else "")
            image, _ = grid_mod.render_grid(chunk, columns, args.tile_size, plan.store, title,
                                            separators=range(1, len(chunk), 2), legend=legend)
            files[name] = grid_mod.png_bytes(image)
        sections.append(Section(
            "Side by side: {} vs {}".format(a.name, b.name), names,
            "Two rows per query, {} above {}: the same queries ({}), each model's own ranking{}.".format(
                a.name, b.name, compare_order, " and its own junk tiles" if show_junk else ""),
            legend_tiles[:1] + ["Row label: model name, then as in the rank lists."] + legend_tiles[2:]))
    if "tsne" in plan.pictures:
        from .plots import plot_tsne

        query = models[0].query
        pids = np.concatenate([query.pids[plan.tsne_query], models[0].gallery.pids[plan.tsne_gallery]])
        is_query = np.arange(pids.size) < plan.tsne_query.size
        files["tsne.png"] = plot_tsne([(m.name, m.tsne_xy) for m in models], pids, is_query)
        sections.append(Section(
            "t-SNE", ["tsne.png"],
            "2-D t-SNE map (scikit-learn, init=pca, seed {}) of the query and gallery images of {} identities "
            "({} images){}.".format(args.seed, np.unique(pids).size, pids.size,
                                    ", one panel per model" if len(models) > 1 else ""),
            ["Colour = identity (colours repeat after 60 identities; the number at the centre of each identity's "
             "points is its pid); stars = query images, dots = gallery images.",
             "A good embedding shows one tight cluster per identity. Distances between clusters in a t-SNE map "
             "mean little; only the neighbourhoods do.",
             "With the cosine metric the features are L2-normalised before t-SNE."]))
    if "distances" in plan.pictures:
        from .plots import plot_distances

        files["distances.png"] = plot_distances([(m.name, m.ranking) for m in models], args.metric)
        sampled = models[0].ranking.neg_dist.size < models[0].ranking.num_neg
        sections.append(Section(
            "Distance histograms", ["distances.png"],
            "Density histograms of query-gallery distances ({}): green = same identity, other camera (every such "
            "pair); red = different identity ({}).".format(
                args.metric, "a uniform sample of {} of the {} pairs, seed {}".format(
                    models[0].ranking.neg_dist.size, models[0].ranking.num_neg, args.seed) if sampled
                else "every pair"),
            ["The less the two overlap, the better one distance threshold separates same from different "
             "identities. Same identity and same camera pairs (junk) are left out.",
             "The legend gives the number of pairs in each histogram."]))
    if "roc" in plan.pictures:
        from .plots import plot_roc

        files["roc.png"] = plot_roc([(m.name, m.ranking) for m in models])
        sections.append(Section(
            "ROC", ["roc.png"],
            "Verification ROC from the same pairs as the histograms: a pair is accepted as the same identity when "
            "its distance is below a threshold, swept over all values.",
            ["x: false positive rate (share of different-identity pairs accepted), log scale; y: true positive "
             "rate (share of same-identity, other-camera pairs accepted).",
             "AUC in the legend: area under the curve (1 = perfect separation, 0.5 = chance)."]))
    if args.projector:
        sections.append(Section(
            "Embedding projector", [PROJECTOR + "/", PROJECTOR + "/projector_config.pbtxt"],
            "TensorBoard embedding projector: run `tensorboard --logdir {}` and open its PROJECTOR tab.".format(
                os.path.join(args.output, PROJECTOR)),
            ["{} images{} per model; metadata columns pid, camid, set (query / gallery), index (row in its file), "
             "file; thumbnails of each image.".format(
                 len(plan.projector_rows), " (a seeded sample)" if len(plan.projector_rows) < len(
                     models[0].query) + len(models[0].gallery) else "")],
            images=False))

    summary = [["model", "query file", "gallery file", "query / gallery images", "feature dim", "mAP", "Rank-1",
                "queries with a match"]]
    for m in models:
        r = m.ranking
        summary.append([m.name, m.query.source, m.gallery.source, "{} / {}".format(len(m.query), len(m.gallery)),
                        m.query.feats.shape[1], "{:.2f}%".format(100 * r.mAP) if r is not None else "-",
                        "{:.2f}%".format(100 * r.rank1) if r is not None else "-",
                        int(r.valid.sum()) if r is not None else "-"])
    notes = ["Metric: {}. mAP and Rank-1 follow the evaluator (Market1501 protocol: for each query, gallery images "
             "of its identity and camera are ignored; queries without a correct match are not counted).".format(
                 args.metric)] + plan.notes
    files[INDEX] = index_html("Embeddings: " + " vs ".join(m.name for m in models), summary, sections,
                              notes).encode("utf-8")
    return files


def write(plan, files):
    """Write ``files`` (name -> bytes) into the output folder, the projector, index.html last. Returns paths."""
    out = plan.args.output
    os.makedirs(out, exist_ok=True)
    written = []
    for name, data in files.items():
        if name == INDEX:
            continue
        path = os.path.join(out, name)
        atomic_write(path, lambda f, data=data: f.write(data))
        written.append(path)
    if plan.args.projector:
        from .projector import write_projector

        models = []
        for m in plan.models:
            feats = np.stack([(m.query if s == "query" else m.gallery).feats[i] for s, i in plan.projector_rows])
            metadata = []
            for s, i in plan.projector_rows:
                emb = m.query if s == "query" else m.gallery
                metadata.append([int(emb.pids[i]), int(emb.camids[i]), s, i, os.path.basename(emb.paths[i])])
            models.append((m.name, feats, metadata, plan.thumbnails))
        written.append(write_projector(os.path.join(out, PROJECTOR), models))
    path = os.path.join(out, INDEX)
    atomic_write(path, lambda f: f.write(files[INDEX]))
    written.append(path)
    return written


def main(argv=None, prog="tools/visualize.py"):
    """Run the command line; returns 0, or exits with ``prog: error: ...`` on bad input (nothing written)."""
    args = build_parser(prog).parse_args(argv)
    try:
        plan = prepare(args)
        files = render(plan)
    except (VisualizeError, ImageError) as e:
        raise SystemExit("{}: error: {}".format(prog, e)) from None
    warning = plan.store.placeholder_summary()
    if warning:
        print("warning: " + warning, file=sys.stderr)
    for note in plan.notes:
        print("note: " + note)
    for path in write(plan, files):
        print("wrote {}".format(path))
    if args.projector:
        print("projector: tensorboard --logdir {}".format(os.path.join(args.output, PROJECTOR)))
    print("open {}".format(os.path.join(args.output, INDEX)))
    return 0
