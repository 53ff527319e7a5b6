"""PNG plots of a reproduction (matplotlib's Agg renderer: no display needed).

- :func:`plot_summary`: measured vs published mAP and Rank-1 per config, grouped bars, one panel per dataset;
  the published bars are coloured by their source (the EWTH paper or one of the loss zoo's codebases).
- :func:`plot_run_curves`: one run's training curves from its ``metrics.json``: every loss term, mAP /
  Rank-1 across its evaluations, and the mining diagnostics (``diag/*``).

PNGs are written with :func:`fastreid_ewth.files.atomic_write`: a report being rewritten never links a
half-drawn image.
"""
import os

# Figures are built without pyplot: no global backend is switched (a notebook importing this keeps its
# own) and savefig renders PNG with Agg whatever the backend, with or without a display.
from matplotlib.figure import Figure

from ..files import DIAGNOSTICS_PREFIX, LOG_TXT, atomic_write
from .metrics import evaluations, final_evaluation, scalar_curves
from .paper import SOURCES

__all__ = ["plot_summary", "plot_run_curves"]

# shares in [0, 1], plotted apart from the distances
_FRACTIONS = tuple(DIAGNOSTICS_PREFIX + name for name in ("hinge_active", "ew_kept"))
# published bars, one colour per source (paper.SOURCES order); a source the table gains later gets the last
_SOURCE_COLOURS = ("tab:gray", "tab:orange", "tab:green", "tab:purple")


def plot_summary(rows, path):
    """Grouped bars, measured (mean ± std over seeds) next to the published numbers (coloured and named in
    the legend by each row's source), mAP (top) and Rank-1 (bottom).

    Args:
        rows: report rows (``report.aggregate``), any number of datasets.
        path: PNG file to write.
    Returns:
        ``path``.
    """
    datasets = []
    for row in rows:
        if row.dataset not in datasets:
            datasets.append(row.dataset)
    widths = [max(2, sum(1 for r in rows if r.dataset == d)) for d in datasets]
    fig = Figure(figsize=(max(6.0, 0.7 * sum(widths) + 2.0), 7.5))
    axes = fig.subplots(2, len(datasets), squeeze=False, gridspec_kw={"width_ratios": widths})
    handles = {}
    for col, dataset in enumerate(datasets):
        dataset_rows = [r for r in rows if r.dataset == dataset]
        x = list(range(len(dataset_rows)))
        for line, (metric, paper, std, label) in enumerate((("mAP", "paper_mAP", "mAP_std", "mAP (%)"),
                                                             ("R1", "paper_R1", "R1_std", "Rank-1 (%)"))):
            ax = axes[line][col]
            has_paper = any(getattr(r, paper) is not None for r in dataset_rows)
            width = 0.4 if has_paper else 0.6
            shift = width / 2 if has_paper else 0.0
            measured = [getattr(r, metric) for r in dataset_rows]
            errors = [getattr(r, std) or 0.0 for r in dataset_rows]
            handles["measured (mean ± std over seeds)"] = ax.bar(
                [i - shift for i in x], [v or 0.0 for v in measured], width, yerr=errors, capsize=3,
                color="tab:blue")
            for i, (value, error) in enumerate(zip(measured, errors)):
                _label(ax, i - shift, value, error, "no result")
            if has_paper:
                values = [getattr(r, paper) for r in dataset_rows]
                for source in dict.fromkeys(r.source for r in dataset_rows if getattr(r, paper) is not None):
                    index = [i for i, r in enumerate(dataset_rows) if r.source == source and getattr(r, paper)
                             is not None]
                    handles["published: {} (ResNet-50)".format(source)] = ax.bar(
                        [i + shift for i in index], [values[i] for i in index], width, color=_source_colour(source))
                for i, value in enumerate(values):
                    _label(ax, i + shift, value, 0.0, "")
            ax.set_xticks(x)
            ax.set_xticklabels([r.config for r in dataset_rows], rotation=45, ha="right", fontsize=8)
            ax.set_ylabel(label)
            ax.set_ylim(0, 115)  # room above 100 for the value labels
            ax.set_yticks(range(0, 101, 20))
            ax.grid(axis="y", alpha=0.3)
            if line == 0:
                ax.set_title(dataset)
    fig.legend(list(handles.values()), list(handles), loc="upper center", ncol=len(handles), fontsize=9,
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    _save(fig, path)
    return path


def plot_run_curves(records, run_dir, dataset, title, path):
    """Training curves of one run, 2×2 panels: loss terms, mAP/Rank-1, diagnostic shares and distances.

    Args:
        records: the run's ``metrics.json`` history (``metrics.read_metrics``).
        run_dir: the run's folder (for the final evaluation fastreid leaves out of metrics.json).
        dataset: the test dataset (evaluation keys).
        title: figure title.
        path: PNG file to write.
    Returns:
        ``path``.
    """
    curves = scalar_curves(records)
    evals = evaluations(records, dataset)
    final = final_evaluation(run_dir, dataset, records=records)
    if final is not None and (not evals or evals[-1].iteration < final.iteration):
        evals.append(final)

    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2)
    ax = axes[0][0]
    for name, (its, vals) in curves.items():
        if name.startswith("loss_") or name == "total_loss":
            ax.plot(its, vals, label=name, linewidth=1.8 if name == "total_loss" else 1.2)
    _finish(ax, "loss terms (median of 20 iterations)", "loss")

    ax = axes[0][1]
    for key, marker in (("mAP", "o"), ("Rank-1", "s"), ("mINP", "^")):
        points = [(e.iteration, e.values[key]) for e in evals if key in e.values]
        if points:
            ax.plot(*zip(*points), marker=marker, label=key)
    last_from_log = bool(evals) and evals[-1].source == LOG_TXT
    _finish(ax, "evaluations on {}{}".format(dataset, " (last one from {})".format(LOG_TXT) if last_from_log
                                             else ""), "%")

    ax = axes[1][0]
    for name in _FRACTIONS:
        if name in curves:
            ax.plot(*curves[name], label=name)
    ax.set_ylim(-0.02, 1.02)
    _finish(ax, "share of anchors with an open hinge / of kept elements", "share")

    ax = axes[1][1]
    for name, (its, vals) in curves.items():
        if name.startswith(DIAGNOSTICS_PREFIX) and name not in _FRACTIONS:
            ax.plot(its, vals, label=name)
    _finish(ax, "mean hardest-positive / hardest-negative distance", "distance")

    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    return path


def _source_colour(source):
    names = list(SOURCES)
    return _SOURCE_COLOURS[min(names.index(source), len(_SOURCE_COLOURS) - 1) if source in names else -1]


def _label(ax, x, value, error, missing):
    """The bar's value written above it and above its error bar."""
    text = missing if value is None else "{:.1f}".format(value)
    if text:
        ax.text(x, (value or 0.0) + error + 1.5, text, rotation=90, ha="center", va="bottom", fontsize=7)


def _finish(ax, title, ylabel):
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "nothing logged", transform=ax.transAxes, ha="center", va="center", color="gray")


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
