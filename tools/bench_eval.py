#!/usr/bin/env python
"""Benchmark: fastreid_ewth.evaluation's cost beyond the distance matmul, and vs fastreid's rank evaluation.

    python tools/bench_eval.py                 # everything below (about 10 minutes on 2 idle cores)
    python tools/bench_eval.py --skip-market   # MSMT17-sized memory run + evaluate/matmul ratios only
    python tools/bench_eval.py --skip-memory --skip-market   # the evaluate/matmul ratios only
    python tools/bench_eval.py --skip-python   # leave out fastreid's slow Python loop
    python tools/bench_eval.py --quick         # all cases at 1/16 of the sizes, 256-d (a smoke test)
    python tools/bench_eval.py --sequential    # rank_features without overlapping ranking and products

1. MSMT17-sized memory run (11,659 x 82,161, 2048-d, 3,060 identities, 15 cameras, trained-like features):
   ``evaluate_features`` alone in a child process; wall time and the child's peak RSS (its own rusage from
   ``os.wait4``, and ``getrusage(RUSAGE_CHILDREN)`` read right after it exits, before the Cython build
   starts any compiler). Goal: <= 6 GB peak RSS.

2. evaluate / matmul, at MSMT17 and Market1501 size, on random features (``torch.randn``, 2048-d; labels
   from ``make_labels``): correct matches then sit anywhere in the ranking, the worst case for the rank
   step. Timed in the same run, best of ``--ratio-repeats`` interleaved runs (default 3 at Market1501
   size, 1 at MSMT17 size):

   * the bare blocked distance matmul: the blocks ``rank_features`` uses (same rows per block), the
     normalised query block times the normalised gallery transposed into the reused buffer, nothing else
     (the gallery is normalised once, outside the timing);
   * the offline evaluation of ``tools/evaluate.py`` (``evaluate_embeddings``: ``--eval-only``'s
     ``ExactReidEvaluator``, whose ranking is ``rank_features``) on the same features as embedding files,
     cosine, the default ``TEST.TIES`` ("pessimistic"): features -> Rank-k, mAP, mINP, everything included
     (input checks, gallery normalisation, distances, exact ranking).

   Goal: evaluate / matmul <= 1.3 (PASS/FAIL). Also printed (``--skip-fastreid-ties`` leaves it out): the
   same evaluation with ``TEST.TIES fastreid``, the fraction of queries whose ranking has an exact tie
   between a correct and a wrong match (under that rule those rows need fastreid's own ``np.argsort``)
   and what one row's argsort costs next to one row's matmul, from a sample; and, first, how a small
   product scales from 1 thread to torch's threads. ``rank_features`` ranks each block
   while the next block's product runs (``features.OVERLAP``; ``--sequential`` turns that off): where the
   threads share physical cores (SMT siblings; a speed-up near 1x or below) that hides the ranking, and the
   ratio can even drop below 1, the product running faster next to the ranking thread than on its own
   threads alone.

3. Market1501-sized comparison with fastreid (3,368 queries x 15,913 gallery, 2048-d, 750 query identities
   + 1 gallery-only, 2,798 distractors, 6 cameras), timed two ways:

   * rank step alone: the same float32 cosine distance matrix (fastreid's ``build_dist``) handed to ours
     (``evaluate_rank``), fastreid's Python ``eval_market1501`` and fastreid's Cython ``evaluate_cy``;
   * features -> metrics: ours (``evaluate_features``: blocked distances + ranking) vs fastreid's evaluator
     path (``build_dist`` then ``evaluate_rank``). For the Python path that is build_dist's time plus the
     rank step's (run once: it takes most of a minute).

   Features come from a trained-model-like generator (mAP around 80 %) and, for the rank step, also from
   an untrained-like one (mAP around 1 %), where every correct match sits deep in the ranking.
   The Cython module is compiled from fastreid's own shipped ``rank_cy.pyx`` into a temporary folder that
   is deleted afterwards (needs Cython, numpy headers and a C compiler; nothing is written into
   site-packages). Goal: ours <= Cython at Market scale.

Timings depend on what else runs on the machine: measure on an otherwise idle one.
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

from fastreid_ewth.engine import load_cfg
from fastreid_ewth.evaluation import evaluate_features, evaluate_rank
from fastreid_ewth.inference import Embeddings
from fastreid_ewth.inference.offline import evaluate_embeddings
from fastreid_ewth.evaluation import features as features_module
from fastreid_ewth.evaluation.distance import DistanceBlocks, block_bounds
from fastreid_ewth.evaluation.rank import GalleryRanker, block_rows

MARKET = dict(num_query=3368, num_gallery=15913, num_ids=750, num_cams=6, num_distractors=2798, dim=2048)
MSMT = dict(num_query=11659, num_gallery=82161, num_ids=3060, num_cams=15, num_distractors=0, dim=2048)
LATENT = 256  # features are a random projection of a low-dimensional identity code, like a real embedding
GOAL_RSS_GB = 6.0
GOAL_RATIO = 1.3


def quick_dims(dims):
    """``dims`` at 1/16 of the images (at least 3 identities and 4 cameras), 256-d: for ``--quick``."""
    out = dict(dims, num_query=max(16, dims["num_query"] // 16), num_gallery=max(64, dims["num_gallery"] // 16),
               num_ids=max(3, dims["num_ids"] // 16), num_distractors=dims["num_distractors"] // 16, dim=256)
    out["num_query"] = max(out["num_query"], out["num_ids"])  # every identity is queried at least once
    return out


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
    """Whether a fastreid result and ours are the same arrays, else the max |difference| of cmc, mAP and
    mINP (printed)."""
    cmc_ref, ap_ref, inp_ref = (np.asarray(x) for x in ref)
    cmc, ap, inp = ours
    if all(a.shape == b.shape and np.array_equal(a, b) for a, b in ((cmc_ref, cmc), (ap_ref, ap), (inp_ref, inp))):
        return "{}: identical (cmc, all_AP, all_INP bit for bit)".format(name)
    return "{}: max|dcmc| {:.1e}, |dmAP| {:.1e}, |dmINP| {:.1e}".format(
        name, np.abs(cmc_ref - cmc).max(), abs(np.mean(ap_ref) - np.mean(ap)), abs(np.mean(inp_ref) - np.mean(inp)))


def run_market(args, evaluate_cy):
    from fastreid.evaluation.rank import eval_market1501
    from fastreid.utils.compute_dist import build_dist

    dims = args.market
    rng = np.random.default_rng(0)
    q_pids, q_cams, g_pids, g_cams = make_labels(rng, **dims)
    print("Market1501-sized: {} queries x {} gallery, {}-d, {} query ids, {} gallery ids, {} cameras, "
          "{} distractors".format(len(q_pids), len(g_pids), dims["dim"], len(np.unique(q_pids)),
                                  len(np.unique(g_pids[g_pids > 0])), dims["num_cams"], dims["num_distractors"]))
    labels = (q_pids, g_pids, q_cams, g_cams)
    rows = []
    for quality, noise in (("trained-like", 1.5), ("untrained-like", 3.5)):
        model = FeatureModel(1, dims["num_ids"], dims["num_cams"], dims["dim"], noise)
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


def random_case(dims, seed):
    """Random features (``torch.randn``) and make_labels labels: correct matches anywhere in the ranking."""
    rng = np.random.default_rng(seed)
    q_pids, q_cams, g_pids, g_cams = make_labels(rng, **dims)
    gen = torch.Generator().manual_seed(seed)
    qf = torch.randn(len(q_pids), dims["dim"], generator=gen)
    gf = torch.randn(len(g_pids), dims["dim"], generator=gen)
    return qf, gf, (q_pids, g_pids, q_cams, g_cams)


def bare_matmul(blocks, qf, rows):
    """The distance products of ``rank_features``'s blocks into the reused buffer, and nothing else."""
    for first, _, stop in block_bounds(qf.shape[0], rows):
        blocks.products(qf[first:stop])


def tie_sample(blocks, qf, labels, rows=256, argsort_rows=16):
    """(fraction of sampled queries whose ranking needs fastreid's argsort, one row's argsort time / one
    row's matmul time) on the first ``rows`` queries."""
    q_pids, g_pids, q_cams, g_cams = labels
    rows = min(rows, qf.shape[0])
    t = time.perf_counter()
    products = blocks.products(qf[:rows]).numpy()
    t_mm = (time.perf_counter() - t) / rows
    ranker = GalleryRanker(g_pids, g_cams)
    ranker.rank_block(products, q_pids[:rows], q_cams[:rows], offset=1)
    dist = 1 - products[:argsort_rows]
    t = time.perf_counter()
    for row in dist:
        np.argsort(row)
    t_arg = (time.perf_counter() - t) / len(dist)  # one thread; the ranker runs as many as the matmul
    return ranker.rows_tied / max(1, ranker.rows_ranked), t_arg / (t_mm * torch.get_num_threads())


def product_scaling(size=1024, repeats=10):
    """GFLOP/s of a cache-friendly float32 product with 1 thread and with torch's threads: whether the
    CPUs are separate cores (close to N times) or share one (SMT siblings: about 1x or less)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    threads = torch.get_num_threads()
    rates = {}
    try:
        for n in (1, threads, 1, threads):
            torch.set_num_threads(n)
            torch.mm(a, b, out=out)
            t = time.perf_counter()
            for _ in range(repeats):
                torch.mm(a, b, out=out)
            rates[n] = max(rates.get(n, 0.0), repeats * 2 * size ** 3 / (time.perf_counter() - t) / 1e9)
    finally:
        torch.set_num_threads(threads)
    return rates[1], rates[threads], threads


def run_ratio(name, dims, repeats, seed, fastreid_ties=True):
    """Time the bare blocked matmul and the offline evaluation on the same random features; returns the ratio."""
    qf, gf, labels = random_case(dims, seed)
    rows = block_rows(gf.shape[0])
    print("{}: {} queries x {} gallery, {}-d random features, cosine, {} query rows per block".format(
        name, qf.shape[0], gf.shape[0], dims["dim"], min(max(rows, 16), qf.shape[0])), flush=True)
    blocks = DistanceBlocks(gf, "cosine")
    # what tools/evaluate.py evaluates: embedding files, loaded (and checked) before the timing starts
    q_pids, g_pids, q_cams, g_cams = labels
    query = Embeddings(qf.numpy(), q_pids, q_cams, np.full(len(q_pids), ""))
    gallery = Embeddings(gf.numpy(), g_pids, g_cams, np.full(len(g_pids), ""))
    cfg = load_cfg("", ["TEST.METRIC", "cosine"])  # TEST.TIES: the default rule, "pessimistic"
    t_mm = t_eval = float("inf")
    for _ in range(repeats):
        t, _ = best_of(lambda: bare_matmul(blocks, qf, rows), 1)
        t_mm = min(t_mm, t)
        t, res = best_of(lambda: evaluate_embeddings(cfg, query, gallery), 1)
        t_eval = min(t_eval, t)
    ratio = t_eval / t_mm
    print("  bare blocked matmul {:.2f} s | offline evaluation {:.2f} s (best of {}; TEST.TIES {}; mAP {:.4f} %)"
          .format(t_mm, t_eval, repeats, cfg.TEST.TIES, res["mAP"]))
    if fastreid_ties:
        # the same with fastreid's tie order: an argsort of every row that holds a correct/wrong tie
        cfg_fastreid = load_cfg("", ["TEST.METRIC", "cosine", "TEST.TIES", "fastreid"])
        t_fastreid, res_fastreid = best_of(lambda: evaluate_embeddings(cfg_fastreid, query, gallery), 1)
        tied, argsort_share = tie_sample(blocks, qf, labels)
        print("  with TEST.TIES fastreid: {:.2f} s, {:.3f}x the matmul (mAP {:.4f} %): {:.0f} % of the rows hold an "
              "exact correct/wrong tie, and one row's argsort costs {:.2f}x its matmul (sample)".format(
                  t_fastreid, t_fastreid / t_mm, res_fastreid["mAP"], 100 * tied, argsort_share))
    line = "{} evaluate/matmul ratio {:.3f} (goal <= {}): {}".format(
        name, ratio, GOAL_RATIO, "PASS" if ratio <= GOAL_RATIO else "FAIL")
    print("  " + line, flush=True)
    return line


def msmt_child(quick):
    """Runs in the child process: generate MSMT17-sized features, evaluate, print results."""
    dims = quick_dims(MSMT) if quick else MSMT
    rng = np.random.default_rng(0)
    q_pids, q_cams, g_pids, g_cams = make_labels(rng, **dims)
    model = FeatureModel(2, dims["num_ids"], dims["num_cams"], dims["dim"], 1.5)
    t = time.perf_counter()
    qf, gf = model(q_pids, q_cams), model(g_pids, g_cams)
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    res = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric="cosine")
    t_eval = time.perf_counter() - t
    print("features generated in {:.1f} s; evaluate_features {:.1f} s; mAP {:.2f} %, Rank-1 {:.2f} %, mINP {:.2f} %"
          .format(t_gen, t_eval, 100 * res["mAP"], 100 * res["Rank-1"], 100 * res["mINP"]), flush=True)


def run_msmt(args):
    print("MSMT17-sized memory run: {num_query} queries x {num_gallery} gallery, {dim}-d, {num_ids} ids, "
          "{num_cams} cameras, trained-like features (child process)".format(**args.msmt), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    cmd = [sys.executable, os.path.abspath(__file__), "--msmt-child"] + (["--quick"] if args.quick else []) + (
        ["--sequential"] if args.sequential else [])
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
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
    parser.add_argument("--skip-msmt", action="store_true",
                        help="do not run the MSMT17-sized cases (memory run and ratio)")
    parser.add_argument("--skip-memory", action="store_true", help="do not run the MSMT17-sized memory run")
    parser.add_argument("--skip-ratio", action="store_true", help="do not time evaluate / matmul")
    parser.add_argument("--skip-market", action="store_true",
                        help="do not run the Market1501-sized comparison with fastreid")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repeats of the comparison with fastreid; the best time counts")
    parser.add_argument("--ratio-repeats", type=int, default=None,
                        help="interleaved repeats of matmul / offline evaluation (default: 3 at Market1501 size, "
                             "1 at MSMT17 size, where one pair takes several minutes on 2 cores)")
    parser.add_argument("--skip-fastreid-ties", action="store_true",
                        help="do not also time the offline evaluation with TEST.TIES fastreid")
    parser.add_argument("--quick", action="store_true",
                        help="every case at 1/16 of its size with 256-d features, no Cython build, one repeat "
                             "(a smoke test: seconds; its timings mean little)")
    parser.add_argument("--sequential", action="store_true",
                        help="rank_features ranks each block after its product instead of during the next "
                             "block's product (fastreid_ewth.evaluation.features.OVERLAP = False)")
    parser.add_argument("--msmt-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.sequential:
        features_module.OVERLAP = False
    args.market = quick_dims(MARKET) if args.quick else MARKET
    args.msmt = quick_dims(MSMT) if args.quick else MSMT
    if args.msmt_child:
        msmt_child(args.quick)
        return
    if args.quick:
        args.repeats = 1
    print("torch {} ({} threads), numpy {}; rank_features {}{}".format(
        torch.__version__, torch.get_num_threads(), np.__version__,
        "overlaps ranking and products" if features_module.OVERLAP else "ranks after each product",
        "; --quick: reduced sizes" if args.quick else ""))
    # the MSMT child runs first: no compiler process has run yet to blur RUSAGE_CHILDREN
    if not (args.skip_msmt or args.skip_memory):
        run_msmt(args)
        print()
    summary = []
    if not args.skip_ratio:
        one, many, threads = product_scaling()
        print("float32 product 1024^3: {:.0f} GFLOP/s on 1 thread, {:.0f} on {} ({:.2f}x; near 1x or below: the "
              "threads share physical cores, so ranking next to the product costs it little)\n".format(
                  one, many, threads, many / one))
        cases = [("Market1501-sized", args.market, 3)]
        if not args.skip_msmt:
            cases.append(("MSMT17-sized", args.msmt, 1))
        for name, dims, repeats in cases:
            if args.ratio_repeats is not None:
                repeats = args.ratio_repeats
            summary.append(run_ratio(name, dims, 1 if args.quick else max(1, repeats), seed=3,
                                     fastreid_ties=not args.skip_fastreid_ties))
            print()
    if not args.skip_market:
        evaluate_cy, why = None, "skipped (--quick)"
        workdir = tempfile.mkdtemp(prefix="bench_eval_rank_cy_")
        try:
            if not args.quick:
                evaluate_cy, why = compile_fastreid_cython(workdir)
            print("fastreid Cython path: {}".format("compiled in " + workdir if evaluate_cy else why))
            rows = run_market(args, evaluate_cy)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if rows[0][2] is None:
            summary.append("goal ours <= Cython at Market scale: not checked (no Cython build)")
        else:
            verdict = all(t_ours <= t_cy for _, t_ours, t_cy in rows)
            summary.append("goal ours <= Cython at Market scale (rank step): {}".format("met" if verdict else "MISSED"))
    if summary:
        print("\nsummary:\n  " + "\n  ".join(summary))


if __name__ == "__main__":
    main()
