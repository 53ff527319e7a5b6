"""``REPORT.md``, ``report.csv`` and ``runs.csv`` of a reproduction: the published numbers next to ours.

One row per (config, dataset) in ``report.csv`` / REPORT.md: with several seeds, measured values are
the mean over the finished runs with the sample standard deviation next to them. ``runs.csv`` has
one row per run (seed). A row's published numbers are those of whichever source of ``paper_table.csv``
has its config (the EWTH paper, or one of the loss zoo's two codebases; see ``paper``), named in its
``source`` column; ``paper_mAP`` / ``paper_R1`` keep their names whatever the source.
"""
import csv
import datetime
import math
import os
import statistics
from typing import NamedTuple, Optional

from ..files import LOG_TXT, METRICS_JSON
from .metrics import final_evaluation, read_metrics
from .paper import SOURCES, config_source, paper_result, source_datasets
from .runner import read_marker, run_state

__all__ = ["RunResult", "collect", "aggregate", "write_report", "REPORT_COLUMNS"]

#: Columns of report.csv. ``paper_mAP`` / ``paper_R1`` are the published numbers of the row's ``source``
#: (named before the loss zoo's sources joined the EWTH paper's).
REPORT_COLUMNS = ("config", "dataset", "source", "published_method", "paper_mAP", "paper_R1", "mAP", "R1", "mINP",
                  "diff_mAP", "diff_R1", "mAP_std", "R1_std", "mINP_std", "runs", "finished", "status",
                  "wall_time_s", "config_file")
RUN_COLUMNS = ("config", "dataset", "seed", "state", "mAP", "R1", "mINP", "source", "wall_time_s", "attempts",
               "resumed", "output_dir")


class RunResult(NamedTuple):
    spec: object  # RunSpec
    state: str
    mAP: Optional[float]
    rank1: Optional[float]
    mINP: Optional[float]
    source: Optional[str]  # the file the numbers come from: METRICS_JSON or LOG_TXT
    wall_time_s: Optional[float]
    attempts: Optional[int]
    resumed: Optional[bool]


def collect(specs):
    """Measured results of every run in ``specs`` -> list of :class:`RunResult` (None where missing)."""
    results = []
    for spec in specs:
        state = run_state(spec.output_dir)
        evaluation = final_evaluation(spec.output_dir, spec.dataset) if state in ("finished", "unmarked") \
            else None
        marker = read_marker(spec.output_dir) or {}
        values = evaluation.values if evaluation else {}
        results.append(RunResult(spec, state, values.get("mAP"), values.get("Rank-1"), values.get("mINP"),
                                 evaluation.source if evaluation else None, marker.get("wall_time_s"),
                                 marker.get("attempts"), marker.get("resumed")))
    return results


class Row(NamedTuple):
    config: str
    config_file: str
    dataset: str
    source: Optional[str]  # where paper_mAP / paper_R1 come from (paper.SOURCES), None without them
    published_method: Optional[str]  # the row's name in that source, e.g. "Softmax+Triplet loss"
    paper_mAP: Optional[float]  # published by ``source``
    paper_R1: Optional[float]
    mAP: Optional[float]
    R1: Optional[float]
    mINP: Optional[float]
    mAP_std: Optional[float]
    R1_std: Optional[float]
    mINP_std: Optional[float]
    runs: int  # runs planned
    finished: int  # runs with measured numbers
    wall_time_s: Optional[float]  # mean over the finished runs that recorded one
    # "finished", "interrupted", "not run" (also: several seeds, none started), or "k/n finished" for several seeds
    status: str

    @property
    def diff_mAP(self):
        return _diff(self.mAP, self.paper_mAP)

    @property
    def diff_R1(self):
        return _diff(self.R1, self.paper_R1)


def _diff(measured, paper):
    return None if measured is None or paper is None else measured - paper


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


_STATUS = {"fresh": "not run", "interrupted": "interrupted", "running": "running"}


def aggregate(results):
    """Group :class:`RunResult` by (config, dataset), in first-seen order -> list of :class:`Row`."""
    groups = {}
    for r in results:
        groups.setdefault((r.spec.name, r.spec.dataset), []).append(r)
    rows = []
    for (name, dataset), runs in groups.items():
        done = [r for r in runs if r.mAP is not None]
        paper = paper_result(runs[0].spec.config_file, dataset) if name == _stem(runs[0].spec.config_file) \
            else None
        m_map, s_map = _mean_std([r.mAP for r in done])
        m_r1, s_r1 = _mean_std([r.rank1 for r in done])
        m_inp, s_inp = _mean_std([r.mINP for r in done])
        wall, _ = _mean_std([r.wall_time_s for r in done])
        if len(runs) > 1 and not done and all(r.state == "fresh" for r in runs):
            status = "not run"
        elif len(runs) > 1:
            status = "{}/{} finished".format(len(done), len(runs))
        elif done:
            status = "finished"
        else:
            status = _STATUS.get(runs[0].state, "no result")
        rows.append(Row(name, runs[0].spec.config_file, dataset, paper.source if paper else None,
                        paper.method if paper else None, paper.mAP if paper else None,
                        paper.rank1 if paper else None, m_map, m_r1, m_inp, s_map, s_r1, s_inp, len(runs),
                        len(done), wall, status))
    return rows


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


# ----------------------------------------------------------------------------------------------------------
# formatting
# ----------------------------------------------------------------------------------------------------------
def _num(value, digits=1):
    return "" if value is None else "{:.{}f}".format(value, digits)


def _signed(value):
    return "" if value is None else "{:+.1f}".format(value)


def _pm(mean, std):
    if mean is None:
        return "–"
    return _num(mean) if std is None else "{} ± {}".format(_num(mean), _num(std))


def format_duration(seconds):
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return "{}h {:02d}m".format(hours, minutes)
    return "{}m {:02d}s".format(minutes, secs)


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return "{:.4f}".format(value) if math.isfinite(value) else ""
    return value


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(REPORT_COLUMNS)
        for row in rows:
            writer.writerow([_csv_value(getattr(row, column)) for column in REPORT_COLUMNS])


def write_runs_csv(results, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(RUN_COLUMNS)
        for r in results:
            writer.writerow([_csv_value(v) for v in (
                r.spec.name, r.spec.dataset, r.spec.seed, r.state, r.mAP, r.rank1, r.mINP, r.source,
                r.wall_time_s, r.attempts, r.resumed, r.spec.output_dir)])


def markdown_table(rows):
    """The per-dataset results table of REPORT.md (one dataset's rows) -> markdown lines."""
    seeds = any(row.runs > 1 for row in rows)
    head = ["config", "source", "published as", "published mAP", "published R1", "mAP", "R1", "mINP", "Δ mAP",
            "Δ R1", "status", "wall time" + (" / run" if seeds else "")]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for row in rows:
        cells = ["`{}`".format(row.config), row.source or "", row.published_method or "", _num(row.paper_mAP),
                 _num(row.paper_R1),
                 _pm(row.mAP, row.mAP_std), _pm(row.R1, row.R1_std), _pm(row.mINP, row.mINP_std),
                 _signed(row.diff_mAP), _signed(row.diff_R1), row.status, format_duration(row.wall_time_s)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _runs_table(results):
    lines = ["| config | dataset | seed | state | mAP | R1 | mINP | from | wall time | attempts | output |",
             "|---|---|---:|---|---:|---:|---:|---|---:|---:|---|"]
    for r in results:
        lines.append("| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | `{}` |".format(
            r.spec.name, r.spec.dataset, "" if r.spec.seed is None else r.spec.seed, r.state, _num(r.mAP),
            _num(r.rank1), _num(r.mINP), r.source or "", format_duration(r.wall_time_s), r.attempts or "",
            r.spec.output_dir))
    return lines


def write_report(results, output, title="Reproduction report", notes=(), plots=None, extra_sections=()):
    """Write ``REPORT.md``, ``report.csv`` and ``runs.csv`` into ``output``; returns the rows.

    Args:
        results: list of :class:`RunResult`.
        notes: paragraphs printed under the title (what was run, on what).
        plots: ``{"summary": path, "curves": [paths]}`` relative to ``output``, linked from the report.
        extra_sections: ``(heading, [markdown lines])`` appended at the end.
    """
    os.makedirs(output, exist_ok=True)
    rows = aggregate(results)
    write_csv(rows, os.path.join(output, "report.csv"))
    write_runs_csv(results, os.path.join(output, "runs.csv"))

    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    finished = sum(1 for r in results if r.mAP is not None)
    lines = ["# {}".format(title), "",
             "Written {} by `tools/reproduce.py`: {} of {} runs have results.".format(now, finished, len(results)),
             ""]
    for note in notes:
        lines += [note, ""]
    lines += ["Measured numbers are the last evaluation of each run (mAP, Rank-1 and mINP in %); Δ = measured − "
              "published. " + _sources_note(rows), ""]
    from_log = sum(1 for r in results if r.source == LOG_TXT)
    if from_log:
        lines += ["{} of the runs' final numbers come from the results table in their `{}` (2 decimals): "
                  "fastreid 1.4.0 leaves the final evaluation out of `{}`.".format(from_log, LOG_TXT, METRICS_JSON),
                  ""]
    for dataset in _ordered({row.dataset for row in rows}, [row.dataset for row in rows]):
        dataset_rows = [row for row in rows if row.dataset == dataset]
        lines += ["## {}".format(dataset), ""]
        if all(row.paper_mAP is None for row in dataset_rows):
            lines += ["No source has published numbers on {} for these configs: the published columns are "
                      "blank.".format(dataset), ""]
        lines += markdown_table(dataset_rows) + [""]
    for heading, body in extra_sections:
        lines += ["## {}".format(heading), ""] + list(body) + [""]
    if plots:
        lines += ["## Plots", ""]
        if plots.get("summary"):
            lines += ["![measured vs published mAP and Rank-1]({})".format(plots["summary"]), ""]
        for path in plots.get("curves", ()):
            lines.append("- [{}]({})".format(os.path.splitext(os.path.basename(path))[0], path))
        lines.append("")
    lines += ["## Runs", ""] + _runs_table(results) + [""]
    with open(os.path.join(output, "REPORT.md"), "w") as f:
        f.write("\n".join(lines))
    return rows


def _sources_note(rows):
    """Which sources the published columns come from, with their setting and datasets -> one sentence."""
    sources = [source for source in dict.fromkeys(
        config_source(row.config_file) for row in rows if row.config == _stem(row.config_file)) if source]
    if not sources:
        return ("No config here has published numbers: `paper_table.csv` has those of {} (each for its own "
                "project configs).".format(", ".join(SOURCES)))
    return "Published numbers, by the row's source: {}.".format("; ".join(
        "{} ({}; on {})".format(source, SOURCES[source], ", ".join(source_datasets(source))) for source in sources))


def _ordered(items, order):
    seen = []
    for item in order:
        if item in items and item not in seen:
            seen.append(item)
    return seen


def run_records(spec):
    """The run's metrics.json history (for plots)."""
    return read_metrics(os.path.join(spec.output_dir, METRICS_JSON))
