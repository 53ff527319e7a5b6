#!/usr/bin/env python
"""Benchmark: fastreid_ewth.evaluation vs fastreid's Python and Cython rank evaluation.

    python tools/bench_eval.py              # Market1501-sized comparison + MSMT17-sized memory run
    python tools/bench_eval.py --skip-msmt  # Market1501 only
    python tools/bench_eval.py --skip-python  # leave out fastreid's slow Python loop

Market1501-sized case (3,368 queries x 15,913 gallery, 2048-d, 750 query identities + 1 gallery-only,
2,798 distractors, 6 cameras), timed two ways:

* rank step alone: the same float32 cosine distance matrix (fastreid's ``build_dist``) handed to ours
  (``evaluate_rank``), fastreid's Python ``eval_market1501`` and fastreid's Cython ``evaluate_cy``;
* features -> metrics: ours (``evaluate_features``: blocked distances + ranking) vs fastreid's evaluator
  path (``build_dist`` then ``evaluate_rank``). For the Python path that is build_dist's time plus the
  rank step's (run once: it takes most of a minute).

Features come from a trained-model-like generator (mAP around 80 %) and, for the rank step, also from
an untrained-like one (mAP around 1 %), where every correct match sits deep in the ranking and our
method has to sort most of each row.

The Cython module is compiled from fastreid's own shipped ``rank_cy.pyx`` into a temporary folder that is
deleted afterwards (needs Cython, numpy headers and a C compiler; nothing is written into site-packages).

MSMT17-sized case (11,659 x 82,161, 2048-d, 3,060 identities, 15 cameras): ``evaluate_features`` alone in
a child process; wall time and the child's peak RSS (its own rusage from ``os.wait4``, and
``getrusage(RUSAGE_CHILDREN)`` read right after it exits, before the Cython build starts any compiler).

Goals: ours <= Cython at Market scale; MSMT17 <= 6 GB peak RSS.
"""
import argparse
import importlib.util
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

import fastreid_ewth  # noqa: F401  (fastreid compatibility patches before any fastreid import)
import torch

from fastreid_ewth.evaluation import evaluate_features, evaluate_rank

MARKET = dict(num_query=3368, num_gallery=15913, num_ids=750, num_cams=6, num_distractors=2798, dim=2048)
MSMT = dict(num_query=11659, num_gallery=82161, num_ids=3060, num_cams=15, num_distractors=0, dim=2048)
LATENT = 256  # features are a random projection of a low-dimensional identity code, like a real embedding
GOAL_RSS_GB = 6.0


def make_labels(rng, num_query, num_gallery, num_ids, num_cams, num_distractors, **_):
    """Identity and camera labels with Market/MSMT-like structure.

    Each identity is seen by a random subset of 3..num_cams cameras; queries are at most one image per
    (identity, camera) as in Market1501, the gallery spreads the rest over the identity's cameras, one
    extra identity is gallery-only and distractors (identity 0, never queried) fill the remaining gallery.
    """
    ids = np.arange(1, num_ids + 2)  # the last one is the gallery-only identity
    cams_of = [rng.choice(num_cams, size=rng.integers(3, num_cams + 1), replace=False) for _ in ids]
    cells = [(pid, cam) for pid, cams in zip(ids[:-1], cams_of[:-1]) for cam in cams]
    # every identity is queried at least once (its first camera), the other cells are drawn at random
    first = np.cumsum([0] + [len(c) for c in cams_of[:-2]])
    rest = np.setdiff1d(np.arange(len(cells)), first)
    extra = rng.choice(rest, size=num_query - len(first), replace=len(rest) < num_query - len(first))
    pick = np.concatenate([first, extra])
    q_pids = np.array([cells[i][0] for i in pick])
    q_cams = np.array([cells[i][1] for i in pick])

    num_real = num_gallery - num_distractors
    owner = rng.integers(0, len(ids), num_real)
    g_pids = ids[owner]
    g_cams = np.array([rng.choice(cams_of[o]) for o in owner])
    g_pids = np.concatenate([g_pids, np.zeros(num_distractors, dtype=g_pids.dtype)])
    g_cams = np.concatenate([g_cams, rng.integers(0, num_cams, num_distractors)])
    return q_pids, q_cams, g_pids, g_cams


class FeatureModel:
    """Synthetic 2048-d embeddings: identity code + camera shift + per-image noise, projected and ReLU'd.

    ``noise`` sets the difficulty (1.5: a trained model, mAP ~ 80 %; 3.5: untrained, mAP ~ 1 %).
    Distractors get a fresh random identity code each.
    """

    def __init__(self, seed, num_ids, num_cams, dim, noise):
        g = torch.Generator().manual_seed(seed)
        self.gen = g
        self.codes = torch.randn(num_ids + 2, LATENT, generator=g)
        self.cams = 0.3 * torch.randn(num_cams, LATENT, generator=g)
        self.proj = torch.randn(LATENT, dim, generator=g) / LATENT ** 0.5
        self.noise = noise

    def __call__(self, pids, cams, chunk=4096):
        """(N, dim) float32, generated ``chunk`` rows at a time so no float64 or full-size temporary exists."""
        pids = torch.as_tensor(pids)
        cams = torch.as_tensor(cams)
        out = torch.empty(len(pids), self.proj.shape[1])
        for s in range(0, len(pids), chunk):
            p, c = pids[s:s + chunk], cams[s:s + chunk]
            code = torch.where((p == 0)[:, None], torch.randn(len(p), LATENT, generator=self.gen), self.codes[p])
            z = code + self.cams[c] + self.noise * torch.randn(len(p), LATENT, generator=self.gen)
            torch.mm(z, self.proj, out=out[s:s + chunk]).relu_()
        return out


def compile_fastreid_cython(workdir):
    """Compile fastreid's shipped rank_cy.pyx in ``workdir``; returns (evaluate_cy, None) or (None, why)."""
    try:
        import Cython  # noqa: F401
        from Cython.Build import cythonize
    except ImportError:
        return None, "skipped: Cython not installed (pip install cython)"
    from setuptools import Distribution, Extension

    import fastreid.evaluation.rank_cylib as cylib

    src = os.path.join(os.path.dirname(cylib.__file__), "rank_cy.pyx")
    shutil.copy(src, workdir)
    cwd = os.getcwd()
    try:
        os.chdir(workdir)
        ext = Extension("rank_cy", ["rank_cy.pyx"], include_dirs=[np.get_include()])
        dist = Distribution({"ext_modules": cythonize([ext], quiet=True, language_level=3)})
        cmd = dist.get_command_obj("build_ext")
        cmd.inplace = True
        cmd.build_temp = os.path.join(workdir, "build")
        dist.run_command("build_ext")
    except Exception as e:  # a missing compiler or headers: report and go on without Cython
        return None, "skipped: compiling fastreid's rank_cy.pyx failed ({}: {})".format(type(e).__name__, e)
    finally:
        os.chdir(cwd)
    built = [f for f in os.listdir(workdir) if f.startswith("rank_cy") and f.endswith(".so")]
    spec = importlib.util.spec_from_file_location("rank_cy", os.path.join(workdir, built[0]))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.evaluate_cy, None


def best_of(fn, repeats):
    """(min wall seconds, last result) over ``repeats`` calls."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def fmt_ratio(other, ours):
    return "{:6.2f}x".format(other / ours) if other is not None else "   n/a "


def compare(name, ref, ours):
    """Max |difference| of cmc, mAP and mINP between a fastreid result and ours (sanity, printed)."""
    cmc_ref, ap_ref, inp_ref = ref
    cmc, ap, inp = ours
    return "{}: max|dcmc| {:.1e}, |dmAP| {:.1e}, |dmINP| {:.1e}".format(
        name, np.abs(np.asarray(cmc_ref) - cmc).max(), abs(np.mean(ap_ref) - np.mean(ap)),
        abs(np.mean(inp_ref) - np.mean(inp)))


def run_market(args, evaluate_cy):
    from fastreid.evaluation.rank import eval_market1501
    from fastreid.utils.compute_dist import build_dist

    rng = np.random.default_rng(0)
    q_pids, q_cams, g_pids, g_cams = make_labels(rng, **MARKET)
    print("Market1501-sized: {} queries x {} gallery, {}-d, {} query ids, {} gallery ids, {} cameras, "
          "{} distractors".format(len(q_pids), len(g_pids), MARKET["dim"], len(np.unique(q_pids)),
                                  len(np.unique(g_pids[g_pids > 0])), MARKET["num_cams"], MARKET["num_distractors"]))
    labels = (q_pids, g_pids, q_cams, g_cams)
    rows = []
    for quality, noise in (("trained-like", 1.5), ("untrained-like", 3.5)):
        model = FeatureModel(1, MARKET["num_ids"], MARKET["num_cams"], MARKET["dim"], noise)
        qf, gf = model(q_pids, q_cams), model(g_pids, g_cams)
        t_dist, dist = best_of(lambda: build_dist(qf, gf, "cosine"), 1)

        def ours_rank():
            return evaluate_rank(dist, *labels)

        def cy_rank():
            return evaluate_cy(dist, q_pids, g_pids, q_cams, g_cams, 50)

        def ours_feat():
            return evaluate_features(qf, gf, *labels, metric="cosine")

        def cy_feat():
            d = build_dist(qf, gf, "cosine")
            return evaluate_cy(d, q_pids, g_pids, q_cams, g_cams, 50)

        # interleaved repeats: ours and Cython see the same machine noise
        t_ours = t_cy = t_ours_f = t_cy_f = float("inf")
        for _ in range(args.repeats):
            t, res_ours = best_of(ours_rank, 1)
            t_ours = min(t_ours, t)
            if evaluate_cy is not None:
                t, res_cy = best_of(cy_rank, 1)
                t_cy = min(t_cy, t)
            if quality == "trained-like":
                t, feat = best_of(ours_feat, 1)
                t_ours_f = min(t_ours_f, t)
                if evaluate_cy is not None:
                    t, _ = best_of(cy_feat, 1)
                    t_cy_f = min(t_cy_f, t)
        t_cy = t_cy if evaluate_cy is not None else None
        t_cy_f = t_cy_f if evaluate_cy is not None else None

        t_py = None
        checks = []
        if not args.skip_python and quality == "trained-like":
            t_py, res_py = best_of(lambda: eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, 50), 1)
            checks.append(compare("vs fastreid Python", res_py, res_ours))
        if evaluate_cy is not None:
            checks.append(compare("vs fastreid Cython (float32 sums)", res_cy, res_ours))
        print("\n[{}] mAP {:.2f} %, Rank-1 {:.2f} %, mINP {:.2f} %".format(
            quality, 100 * np.mean(res_ours[1]), 100 * res_ours[0][0], 100 * np.mean(res_ours[2])))
        for c in checks:
            print("  agreement " + c)
        print("  build_dist (fastreid, full matrix): {:.2f} s".format(t_dist))
        print("  rank step alone     ours {:7.2f} s | fastreid Python {} | fastreid Cython {}".format(
            t_ours, "{:7.2f} s".format(t_py) if t_py else "  skipped", "{:7.2f} s".format(t_cy) if t_cy else "skipped"))
        print("    speed-up of ours: vs Python {} vs Cython {}".format(fmt_ratio(t_py, t_ours), fmt_ratio(t_cy, t_ours)))
        if quality == "trained-like":
            t_py_f = t_dist + t_py if t_py else None
            print("  features -> metrics ours {:7.2f} s | fastreid Python {} | fastreid Cython {}".format(
                t_ours_f, "{:7.2f} s".format(t_py_f) if t_py_f else "  skipped",
                "{:7.2f} s".format(t_cy_f) if t_cy_f else "skipped"))
            print("    speed-up of ours: vs Python {} vs Cython {}   (ours mAP {:.4f}, Rank-1 {:.4f}; fractions)".format(
                fmt_ratio(t_py_f, t_ours_f), fmt_ratio(t_cy_f, t_ours_f), feat["mAP"], feat["Rank-1"]))
        rows.append((quality, t_ours, t_cy))
    return rows


def msmt_child():
    """Runs in the child process: generate MSMT17-sized features, evaluate, print results."""
    rng = np.random.default_rng(0)
    q_pids, q_cams, g_pids, g_cams = make_labels(rng, **MSMT)
    model = FeatureModel(2, MSMT["num_ids"], MSMT["num_cams"], MSMT["dim"], 1.5)
    t = time.perf_counter()
    qf, gf = model(q_pids, q_cams), model(g_pids, g_cams)
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    res = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric="cosine")
    t_eval = time.perf_counter() - t
    print("features generated in {:.1f} s; evaluate_features {:.1f} s; mAP {:.2f} %, Rank-1 {:.2f} %, mINP {:.2f} %"
          .format(t_gen, t_eval, 100 * res["mAP"], 100 * res["Rank-1"], 100 * res["mINP"]), flush=True)


def run_msmt():
    print("MSMT17-sized: {num_query} queries x {num_gallery} gallery, {dim}-d, {num_ids} ids, {num_cams} cameras "
          "(child process)".format(**MSMT), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--msmt-child"], stdout=log,
                                stderr=subprocess.STDOUT)
        # wait4 reaps the child and returns its own rusage; RUSAGE_CHILDREN then includes it too
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        log.seek(0)
        lines = [l for l in log.read().splitlines() if "Warning" not in l and "warn(" not in l]
    children_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9  # ru_maxrss: KiB on Linux
    child_gb = usage.ru_maxrss * 1024 / 1e9
    print("  " + "\n  ".join(lines[-3:]))
    if proc.returncode != 0:
        print("  child failed with exit code {}".format(proc.returncode))
        return None
    print("  wall time (child, incl. start-up and feature generation): {:.1f} s".format(wall))
    print("  peak RSS of the child: {:.2f} GB (wait4); RUSAGE_CHILDREN max {:.2f} GB (before it: {:.2f} GB, "
          "short-lived children of library imports)".format(child_gb, children_gb, before * 1024 / 1e9))
    print("  goal <= {:.0f} GB: {}".format(GOAL_RSS_GB, "met" if child_gb <= GOAL_RSS_GB else "MISSED"))
    return child_gb


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-python", action="store_true", help="do not time fastreid's Python loop")
    parser.add_argument("--skip-msmt", action="store_true", help="do not run the MSMT17-sized case")
    parser.add_argument("--skip-market", action="store_true", help="do not run the Market1501-sized case")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best time counts")
    parser.add_argument("--msmt-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.msmt_child:
        msmt_child()
        return
    print("torch {} ({} threads), numpy {}".format(torch.__version__, torch.get_num_threads(), np.__version__))
    # the MSMT child runs first: no compiler process has run yet to blur RUSAGE_CHILDREN
    if not args.skip_msmt:
        run_msmt()
        print()
    if args.skip_market:
        return
    workdir = tempfile.mkdtemp(prefix="bench_eval_rank_cy_")
    try:
        evaluate_cy, why = compile_fastreid_cython(workdir)
        print("fastreid Cython path: {}".format("compiled in " + workdir if evaluate_cy else why))
        rows = run_market(args, evaluate_cy)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if rows[0][2] is None:
        print("\ngoal ours <= Cython at Market scale: not checked (no Cython build)")
    else:
        verdict = all(t_ours <= t_cy for _, t_ours, t_cy in rows)
        print("\ngoal ours <= Cython at Market scale (rank step): {}".format("met" if verdict else "MISSED"))


if __name__ == "__main__":
    main()
