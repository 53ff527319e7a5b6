"""matplotlib pictures of embeddings: t-SNE map, distance histograms, ROC (PNG bytes, no pyplot).

Figures are :class:`matplotlib.figure.Figure` objects rendered by ``FigureCanvasAgg``: no global backend is
switched (a notebook or GUI importing this keeps its own) and no display is needed.
"""
import inspect
import io

import numpy as np

__all__ = ["tsne_subset", "tsne_points", "plot_tsne", "plot_distances", "plot_roc", "roc_points",
           "MIN_TSNE_POINTS", "MIN_TSNE_ITER", "METRIC_LABELS"]

#: fewer points make no map worth looking at (and sklearn needs perplexity below the count)
MIN_TSNE_POINTS = 10
#: sklearn refuses fewer optimisation iterations
MIN_TSNE_ITER = 250

METRIC_LABELS = {"cosine": "cosine distance", "euclidean": "squared euclidean distance"}


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    fig.clear()
    return buf.getvalue()


def _palette(n):
    """``n`` RGBA colours, tab20 + tab20b + tab20c (60 distinct), repeated beyond."""
    from matplotlib import colormaps

    colours = [c for name in ("tab20", "tab20b", "tab20c") for c in colormaps[name].colors]
    return [colours[i % len(colours)] for i in range(n)]


def tsne_subset(query, gallery, num_ids, seed=0):
    """Images for the t-SNE map: every query and gallery image of ``num_ids`` identities drawn (with ``seed``)
    among the query set's identities; ``num_ids`` 0 = all of them.

    Returns:
        (query indices, gallery indices, chosen identities), each sorted.
    """
    ids = np.unique(query.pids)
    if 0 < num_ids < ids.size:
        ids = np.sort(np.random.default_rng(seed).choice(ids, size=num_ids, replace=False))
    return np.flatnonzero(np.isin(query.pids, ids)), np.flatnonzero(np.isin(gallery.pids, ids)), ids


def _tsne_iter_argument():
    """sklearn >= 1.5 calls the iteration count ``max_iter``; older releases ``n_iter``."""
    from sklearn.manifold import TSNE

    return "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"


def tsne_points(feats, metric, perplexity=30.0, iterations=1000, seed=0):
    """(N, 2) t-SNE coordinates of ``feats`` (N, D).

    For the cosine metric the features are L2-normalised first, so that t-SNE's (euclidean) neighbours are
    the cosine neighbours. ``perplexity`` is clipped to ``(N - 1) / 3`` (sklearn needs it below N).
    """
    from sklearn.manifold import TSNE

    x = np.asarray(feats, dtype=np.float64)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = x.shape[0]
    perplexity = float(max(1.0, min(perplexity, (n - 1) / 3.0)))
    kwargs = {_tsne_iter_argument(): int(iterations)}
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca" if x.shape[1] >= 2 else "random",
                learning_rate="auto", random_state=seed, **kwargs)
    return tsne.fit_transform(x)


def plot_tsne(panels, pids, is_query):
    """t-SNE map, one panel per model.

    Args:
        panels: [(model name, (N, 2) coordinates)], the same N images in each.
        pids: (N,) identities (colour); is_query: (N,) bool (marker: star = query, dot = gallery).
    Returns:
        PNG bytes.
    """
    from matplotlib.lines import Line2D

    ids = np.unique(pids)
    colour_of = dict(zip(ids.tolist(), _palette(ids.size)))
    colours = np.array([colour_of[p] for p in pids.tolist()])
    fig = _figure((6.5 * len(panels), 6.5))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, xy) in zip(axes, panels):
        gallery = ~is_query
        ax.scatter(xy[gallery, 0], xy[gallery, 1], c=colours[gallery], s=18, marker="o", linewidths=0)
        ax.scatter(xy[is_query, 0], xy[is_query, 1], c=colours[is_query], s=110, marker="*",
                   edgecolors="black", linewidths=0.6)
        for pid in ids.tolist():
            centre = xy[pids == pid].mean(axis=0)
            ax.annotate(str(pid), centre, fontsize=6, ha="center", va="center", alpha=0.8)
        ax.set_title("{}: t-SNE of {} images, {} identities".format(name, len(pids), ids.size), fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], marker="*", linestyle="", markersize=11, markerfacecolor="grey",
                      markeredgecolor="black", label="query"),
               Line2D([], [], marker="o", linestyle="", markersize=5, markerfacecolor="grey",
                      markeredgecolor="none", label="gallery")]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9,
               title="colour = identity (number at each identity's centre)", title_fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _png(fig)


def plot_distances(panels, metric):
    """Density histograms of positive and negative pair distances, one panel per model.

    Args:
        panels: [(model name, :class:`~.ranking.Ranking`)].
    """
    fig = _figure((6.0 * len(panels), 4.2))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, ranking) in zip(axes, panels):
        pos, neg = ranking.pos_dist, ranking.neg_dist
        both = np.concatenate([pos, neg])
        lo, hi = float(both.min()), float(both.max())
        if hi <= lo:
            hi = lo + 1e-6
        bins = np.linspace(lo, hi, 61)
        sampled = " sampled of {}".format(ranking.num_neg) if neg.size < ranking.num_neg else ""
        if pos.size:
            ax.hist(pos, bins=bins, density=True, alpha=0.55, color="tab:green",
                    label="same identity, other camera ({} pairs)".format(pos.size))
        ax.hist(neg, bins=bins, density=True, alpha=0.55, color="tab:red",
                label="different identity ({} pairs{})".format(neg.size, sampled))
        ax.set_xlabel("query-gallery " + METRIC_LABELS[metric])
        ax.set_ylabel("density")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def roc_points(ranking):
    """(fpr, tpr, auc) of telling same-identity pairs from different-identity ones by distance."""
    from sklearn.metrics import auc, roc_curve

    labels = np.concatenate([np.ones(ranking.pos_dist.size), np.zeros(ranking.neg_dist.size)])
    scores = -np.concatenate([ranking.pos_dist, ranking.neg_dist])  # closer = more likely the same identity
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr, float(auc(fpr, tpr))


def plot_roc(panels):
    """ROC curves of all models on one plot (log false-positive axis), AUC in the legend.

    Args:
        panels: [(model name, :class:`~.ranking.Ranking`)], each with at least one positive pair.
    """
    fig = _figure((6.0, 5.0))
    ax = fig.subplots()
    floor = 1.0
    for name, ranking in panels:
        fpr, tpr, area = roc_points(ranking)
        ax.plot(fpr, tpr, label="{} (AUC {:.4f})".format(name, area), linewidth=1.6)
        floor = min(floor, 1.0 / max(1, ranking.neg_dist.size))
    grid = np.logspace(np.log10(floor), 0, 50)
    ax.plot(grid, grid, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false positive rate (different-identity pairs within the threshold)")
    ax.set_ylabel("true positive rate (same-identity pairs within)")
    ax.set_title("ROC over distance thresholds", fontsize=10)
    ax.legend(loc="lower right", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _png(fig)
