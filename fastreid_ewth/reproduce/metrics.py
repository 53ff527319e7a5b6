"""Reading what a fastreid run leaves in its ``OUTPUT_DIR``: ``metrics.json`` and ``log.txt``.

``metrics.json`` is written by fastreid's ``JSONWriter``: one JSON object per line, ``{"iteration": i,
<scalar>: value, ...}``, training scalars median-smoothed over 20 iterations. Evaluations appear as
flat keys ``mAP``, ``Rank-1``, ``mINP`` (``<dataset>/mAP`` ... when a run tests on several datasets).

Two things make the raw file unreliable to read naively:

- **resumed or restarted runs append**: after ``--resume`` the iterations start again at the checkpoint's
  epoch, so a killed attempt leaves records past that point which the resumed attempt re-logs. The
  records are read as one history in which a later record replaces every earlier one at the same or a
  later iteration.
- **fastreid 1.4.0 never writes the final evaluation to metrics.json**: the writer hook writes at the
  last iteration (``after_step``) and then skips scalars put at that same iteration, which is where the
  final evaluation puts them (``after_epoch``); an evaluation in ``after_train`` is never written either.
  The final numbers are in ``log.txt``, in the results table fastreid prints after every evaluation
  (to 2 decimals). :func:`final_evaluation` takes them from there when ``metrics.json`` lacks them.
"""
import json
import math
import os
import re
from typing import NamedTuple

from ..files import DIAGNOSTICS_PREFIX, LOG_TXT, METRICS_JSON

__all__ = ["EVAL_KEYS", "Evaluation", "read_metrics", "evaluations", "final_evaluation", "scalar_curves",
           "log_evaluations"]

#: Metric keys the report uses, as fastreid names them.
EVAL_KEYS = ("mAP", "Rank-1", "mINP")


class Evaluation(NamedTuple):
    iteration: int  # the training iteration it followed (-1 when unknown)
    values: dict  # {"mAP": 50.9, "Rank-1": 39.0, "mINP": 39.6} in %
    source: str  # the file the values were read from: METRICS_JSON ("metrics.json") or LOG_TXT ("log.txt")


def read_metrics(path):
    """Records of a ``metrics.json`` as one consistent history -> list of dicts, iterations increasing.

    A missing file gives ``[]``; a torn last line (a killed writer) is ignored; a record whose iteration
    is not after the previous one (a resumed or restarted attempt) drops the earlier records from that
    iteration on.
    """
    if not os.path.isfile(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or "iteration" not in record:
                continue
            while records and records[-1]["iteration"] >= record["iteration"]:
                records.pop()
            records.append(record)
    return records


def _eval_key(record, key, dataset):
    for name in (key, "{}/{}".format(dataset, key)):
        if name in record:
            return name
    return None


def evaluations(records, dataset):
    """Evaluations in ``records`` (from :func:`read_metrics`) -> list of :class:`Evaluation`."""
    found = []
    for record in records:
        values = {}
        for key in EVAL_KEYS:
            name = _eval_key(record, key, dataset)
            if name is not None and _finite(record[name]):
                values[key] = float(record[name])
        if "mAP" in values:
            found.append(Evaluation(int(record["iteration"]), values, METRICS_JSON))
    return found


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log_evaluations(log_path, dataset):
    """Every results table fastreid printed for ``dataset`` in ``log.txt``, in order -> list of dicts.

    fastreid prints ``| Dataset | Rank-1 | ... | mAP | mINP | ... |`` (coloured, pipe table) followed by
    one row per dataset; values are rounded to 2 decimals.
    """
    if not os.path.isfile(log_path):
        return []
    tables = []
    header = None
    with open(log_path, errors="replace") as f:
        for line in f:
            line = _ANSI.sub("", line).strip()
            if not line.startswith("|"):
                header = None  # a table ends at the first line that is not a table row
                continue
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells and cells[0] == "Dataset":
                header = cells
            elif header is not None and cells and cells[0] == dataset and len(cells) == len(header):
                row = {}
                for name, cell in zip(header[1:], cells[1:]):
                    try:
                        row[name] = float(cell)
                    except ValueError:
                        pass
                if "mAP" in row:
                    tables.append({k: row[k] for k in EVAL_KEYS if k in row})
                header = None
    return tables


def final_evaluation(run_dir, dataset, records=None):
    """The run's last evaluation on ``dataset`` -> :class:`Evaluation`, or ``None`` if it has none.

    From ``metrics.json`` when its last record holds one (exact values), else from the last results
    table in ``log.txt`` (fastreid's final evaluation, see the module docstring), dated at the last
    logged iteration.
    """
    if records is None:
        records = read_metrics(os.path.join(run_dir, METRICS_JSON))
    evals = evaluations(records, dataset)
    last_iteration = records[-1]["iteration"] if records else -1
    if evals and evals[-1].iteration == last_iteration:
        return evals[-1]
    tables = log_evaluations(os.path.join(run_dir, LOG_TXT), dataset)
    if tables:
        return Evaluation(int(last_iteration), tables[-1], LOG_TXT)
    return evals[-1] if evals else None


def scalar_curves(records, prefixes=("loss_", "total_loss", DIAGNOSTICS_PREFIX)):
    """Training scalars whose names start with one of ``prefixes`` -> ``{name: ([iteration], [value])}``."""
    curves = {}
    for record in records:
        for name, value in record.items():
            if name.startswith(prefixes) and _finite(value):
                its, vals = curves.setdefault(name, ([], []))
                its.append(int(record["iteration"]))
                vals.append(float(value))
    return dict(sorted(curves.items()))


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
