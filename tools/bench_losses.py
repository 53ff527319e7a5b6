#!/usr/bin/env python
"""Forward+backward time of the losses, each next to the library implementation it stands for.

Two tables, each measured in one process, interleaved round by round (order shuffled each round), so
a busy machine slows every loss alike; medians over the rounds.

``--suite zoo`` (the default): every loss of ``LOSS_REGISTRY``, built from the config as training
builds it, called as ``EWTHBaseline`` calls it (``entry(*reads)``, terms summed), next to what it wraps
called bare with the same arguments: fastreid's loss function, pytorch-metric-learning's loss object
(with its miner, the same class weights), and for our own losses the nearest implementation
(EWTHLoss, timed as its TH variant: fastreid's batch-hard ``triplet_loss``, the same loss; CenterLoss:
the formula in plain torch, a floor).
Each entry and its reference run back to back, in a random order, and the ratio is the median over
rounds of ours/reference. PASS within a ratio of 1.5; the exit status is 1 when any loss fails.

``--suite ewth``: every EWTH variant of ``ewth_loss`` next to fastreid's TriHard (the median time per
call and the median over rounds of its time divided by fastreid's in the same round).

    python tools/bench_losses.py                        # zoo table, P×K = 16×4, 2048-d, 751 classes
    python tools/bench_losses.py --threads 1           # one thread: steadier when other jobs share the cores
    python tools/bench_losses.py --device cuda         # on the GPU (timings synchronise it)
    python tools/bench_losses.py --suite ewth          # EWTH variants, batches 64×2048 and 256×2048
    python tools/bench_losses.py --suite ewth --sizes 64 --profile  # + torch.profiler tables (HNEWTH, fastreid)
    python tools/bench_losses.py --suite all           # both
"""
import argparse
import math
import random
import statistics
import sys
import time
import warnings
from typing import Callable, NamedTuple

import fastreid_ewth  # noqa: F401  (first: makes fastreid importable on current Python/torch)
import torch
from fastreid.modeling.losses import cross_entropy_loss, focal_loss, pairwise_circleloss, pairwise_cosface, triplet_loss
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from fastreid_ewth.losses import EWTH_VARIANTS, ewth_loss

REFERENCE = "TH-fastreid"

#: the zoo table's budget: an entry may take at most this many times its reference's time
ZOO_BUDGET = 1.5

# pytorch-metric-learning's HistogramLoss indexes with a list, which torch >= 2.x warns about at every call
warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")


def make_batch(num_images, dim, images_per_id, num_classes, seed):
    g = torch.Generator().manual_seed(seed)
    num_ids = num_images // images_per_id
    ids = torch.randperm(num_classes, generator=g)[:num_ids]
    targets = ids.repeat_interleave(images_per_id)
    centers = torch.randn(num_classes, dim, generator=g) * 0.5
    features = (centers[targets] + torch.randn(num_images, dim, generator=g)).relu()  # pooled CNN features are >= 0
    weight = torch.randn(num_classes, dim, generator=g) * 0.02
    return features, targets, weight


def loss_fns(features, targets, weight):
    """name -> callable running one forward+backward."""
    x = features.clone().requires_grad_()

    def fastreid_th():
        x.grad = None
        triplet_loss(x, targets, margin=0.3, norm_feat=False, hard_mining=True).backward()

    def variant_fn(variant):
        norm_feat = "l2" if variant == "TH_FN" else "none"

        def run():
            x.grad = None
            sum(ewth_loss(x, targets, weight, variant=variant, norm_feat=norm_feat).values()).backward()

        return run

    fns = {REFERENCE: fastreid_th}
    fns.update({variant: variant_fn(variant) for variant in EWTH_VARIANTS})
    return fns


def no_sync():
    pass


def measure(fns, rounds, calls, seed, groups=None, sync=no_sync):
    """Per name: list of seconds per call, one entry per round (same rounds for every name).

    ``calls``: calls per round, one number or ``{name: number}``. ``groups``: lists of names run back
    to back (the groups' order and the order inside each group shuffled every round); default: each
    name alone. ``sync``: waits for the device (``torch.cuda.synchronize`` on a GPU).
    """
    rng = random.Random(seed)
    names = list(fns)
    per_call = calls if isinstance(calls, dict) else dict.fromkeys(names, calls)
    groups = [list(group) for group in groups] if groups is not None else [[name] for name in names]
    for name in names:  # warm-up: allocator, thread pool, lazy inits
        for _ in range(3):
            fns[name]()
    sync()
    times = {name: [] for name in names}
    for _ in range(rounds):
        rng.shuffle(groups)
        for group in groups:
            rng.shuffle(group)
            for name in group:
                fn, n = fns[name], per_call[name]
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                sync()
                times[name].append((time.perf_counter() - start) / n)
    return times


def report(size, dim, times):
    """Median time per call, median over rounds of the per-round ratio to the reference, and the
    ratio of the best rounds (least disturbed by other processes: the cleaner figure on a busy
    machine)."""
    ref = times[REFERENCE]
    print(f"\nbatch {size}×{dim} (P×K = {size // 4}×4), {len(ref)} rounds, torch threads {torch.get_num_threads()}")
    print(f"{'loss':<12} {'median ms':>10} {'best ms':>9} {'ratio to ' + REFERENCE:>22} {'best-round ratio':>17}")
    ratios = {}
    for name, values in times.items():
        ratios[name] = statistics.median(v / r for v, r in zip(values, ref))
        best = min(values) / min(ref)
        print(f"{name:<12} {statistics.median(values) * 1e3:>10.3f} {min(values) * 1e3:>9.3f} "
              f"{ratios[name]:>22.2f} {best:>17.2f}")
    print(f"HNEWTH / {REFERENCE} at {size}×{dim}: {ratios['HNEWTH']:.2f} (required <= 2.0 at 64×2048, goal <= 1.5)")


def profile(fns, name, calls):
    from torch.profiler import ProfilerActivity, profile as torch_profile

    fn = fns[name]
    for _ in range(5):
        fn()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    print(f"\ntorch.profiler, {name}, {calls} calls (self CPU time):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


# --------------------------------------------------------------------------------------------------
# The zoo: every registered loss next to the library implementation it wraps
# --------------------------------------------------------------------------------------------------
class Reference(NamedTuple):
    """What an entry is timed against.

    ``build(hyper_parameters, entry)`` -> ``(fn, parameters)``: ``fn`` takes the entry's reads, in the
    entry's order, and returns a scalar tensor; ``parameters`` are the tensors of its own whose gradients
    it computes. ``same_value``: the entry computes ``SCALE × fn(...)``, checked before timing (False when
    the reference is another loss).
    """

    label: str
    build: Callable
    same_value: bool = True


def _function(fn):
    """A reference that is a plain function of the reads and the hyper-parameters."""
    return lambda hp, entry: (lambda *reads: fn(hp, *reads), [])


def _pml_metric(make):
    """A pytorch-metric-learning metric loss object, built from the hyper-parameters."""
    return lambda hp, entry: (make(hp), [])


def _pml_classifier(library_class, margin):
    """A pytorch-metric-learning classification loss: the same class, margin (converted to the library's
    units by ``margin``) and logit scale, with a copy of the entry's class weights."""

    def build(hp, entry):
        weight = entry.loss.W
        loss = library_class(num_classes=weight.shape[1], embedding_size=weight.shape[0],
                             margin=margin(hp["margin"]), scale=hp["logit_scale"]).to(weight.device)
        with torch.no_grad():
            loss.W.copy_(weight)
        return loss, list(loss.parameters())

    return build


def _multi_similarity(hp, entry):
    loss = pml_losses.MultiSimilarityLoss(alpha=hp["alpha"], beta=hp["beta"], base=hp["base"])
    miner = pml_miners.MultiSimilarityMiner(epsilon=hp["epsilon"])
    return (lambda feature, labels: loss(feature, labels, miner(feature, labels))), []


def _center_floor(hp, entry):
    centers = entry.centers
    return (lambda feature, labels: (feature - centers[labels]).pow(2).sum(dim=1).mean()), [centers]


def _ewth_core(hp, entry):
    options = dict(entry.options, scale=1.0)  # the check multiplies by the entry's SCALE itself
    return (lambda feature, labels, weight: sum(ewth_loss(feature, labels, weight, **options).values())), []


#: registered name -> its references; the first is the one the script is about, the library
#: implementation the entry wraps, or for our own losses the nearest one.
ZOO_REFERENCES = {
    "CrossEntropyLoss": [Reference("fastreid cross_entropy_loss", _function(
        lambda hp, logits, labels: cross_entropy_loss(logits, labels, hp["epsilon"], hp["alpha"])))],
    "FocalLoss": [Reference("fastreid focal_loss", _function(
        lambda hp, logits, labels: focal_loss(logits, labels, hp["alpha"], hp["gamma"])))],
    "TripletLoss": [Reference("fastreid triplet_loss", _function(
        lambda hp, feature, labels: triplet_loss(feature, labels, hp["margin"], hp["norm_feat"], hp["hard_mining"])))],
    "CircleLoss": [Reference("fastreid pairwise_circleloss", _function(
        lambda hp, feature, labels: pairwise_circleloss(feature, labels, hp["margin"], hp["gamma"])))],
    "Cosface": [Reference("fastreid pairwise_cosface", _function(
        lambda hp, feature, labels: pairwise_cosface(feature, labels, hp["margin"], hp["gamma"])))],
    "NPairsLoss": [Reference("pml NPairsLoss", _pml_metric(lambda hp: pml_losses.NPairsLoss()))],
    "HistogramLoss": [Reference("pml HistogramLoss", _pml_metric(
        lambda hp: pml_losses.HistogramLoss(n_bins=int(hp["n_bins"]))))],
    "MultiSimilarityLoss": [Reference("pml MultiSimilarity + miner", _multi_similarity)],
    "ContrastiveLoss": [Reference("pml ContrastiveLoss", _pml_metric(
        lambda hp: pml_losses.ContrastiveLoss(pos_margin=hp["pos_margin"], neg_margin=hp["neg_margin"])))],
    "SphereFaceLoss": [Reference("pml SphereFaceLoss", _pml_classifier(pml_losses.SphereFaceLoss, int))],
    "CosFaceLoss": [Reference("pml CosFaceLoss", _pml_classifier(pml_losses.CosFaceLoss, float))],
    # the entry's MARGIN is in radians (as fastreid's ArcSoftmax), pytorch-metric-learning's in degrees
    "ArcFaceLoss": [Reference("pml ArcFaceLoss", _pml_classifier(pml_losses.ArcFaceLoss, math.degrees))],
    # ours. EWTHLoss is timed as its TH variant (zoo_config), the same loss as fastreid's batch-hard
    # TriHard, the nearest library implementation; the price of the other variants' extra terms is the
    # --suite ewth table's. Next to its own functional core: the price of the entry
    "EWTHLoss": [Reference("fastreid triplet_loss, hard (TH)", _function(
        lambda hp, feature, labels, weight: triplet_loss(feature, labels, hp["margin"], False, True))),
        Reference("ewth_loss (its core)", _ewth_core)],
    # CenterLoss: the same formula in plain torch, without the entry's input checks and clamp: a floor
    "CenterLoss": [Reference("torch formula (a floor)", _center_floor)],
}


def zoo_config(num_classes, dim):
    """The fastreid config the entries are built from: defaults, ``num_classes`` classes, ``dim``-d features."""
    from fastreid.config import get_cfg

    cfg = get_cfg()
    fastreid_ewth.add_ewth_config(cfg)
    cfg.MODEL.HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.BACKBONE.FEAT_DIM = dim
    cfg.MODEL.HEADS.EMBEDDING_DIM = 0
    cfg.MODEL.LOSSES.EWTH.VARIANT = "TH"  # TriHard, to compare with fastreid's (see ZOO_REFERENCES)
    return cfg


def zoo_inputs(features, targets, weight):
    """What an entry may read (the names of ``INPUTS``), as leaves where gradients flow."""
    after_bn = (features - features.mean(0)) / (features.std(0) + 1e-5)  # a BNNeck in training mode
    logits = after_bn @ weight.t()
    feature = features.clone().requires_grad_()
    return {
        "feature": feature,
        "pre_bn": feature,
        "after_bn": after_bn.requires_grad_(),
        "logits": logits.requires_grad_(),
        "classifier_weight": weight,
        "labels": targets,
    }


def _forward_backward(loss, args, leaves):
    def run():
        for t in leaves:
            t.grad = None
        value = loss(*args)
        if isinstance(value, dict):
            value = sum(value.values())
        value.backward()

    return run


def zoo_rows(cfg, inputs, device):
    """One row per (registered loss, reference), in the registry's order: ``{name, key, reference, same,
    ours, ref}``, ``ours`` and ``ref`` callables running one forward+backward (the keys of their timings:
    ``ours:<name>`` and ``key``), ``same`` True/False when the values were compared, None when the
    reference is another loss; or ``{name, missing}`` for a loss the script cannot time."""
    from fastreid_ewth.modeling import LOSS_REGISTRY, registered_losses

    rows = []
    for name in registered_losses():
        entry_class = LOSS_REGISTRY.get(name)
        if name not in ZOO_REFERENCES:
            rows.append({"name": name, "missing": "no reference: add one to ZOO_REFERENCES in tools/bench_losses.py"})
            continue
        unknown = [what for what in entry_class.reads if what not in inputs]
        if unknown:
            rows.append({"name": name, "missing": "reads {}, which the bench does not make".format(", ".join(unknown))})
            continue
        entry = entry_class.from_config(cfg).to(device)
        args = [inputs[what] for what in entry_class.reads]
        leaves = [t for t in args if t.requires_grad]
        ours = _forward_backward(entry, args, leaves + list(entry.parameters()))
        hyper_parameters = entry_class.hyper_parameters(cfg)
        for i, reference in enumerate(ZOO_REFERENCES[name]):
            fn, parameters = reference.build(hyper_parameters, entry)
            same = None
            if reference.same_value:
                with torch.no_grad():
                    ours_value = sum(entry(*args).values())
                    ref_value = fn(*args) * entry.scale
                same = bool(torch.allclose(ours_value, ref_value, rtol=1e-4, atol=1e-7))
            rows.append({"name": name, "key": f"ref{i}:{name}", "reference": reference.label, "same": same,
                         "ours": ours, "ref": _forward_backward(fn, args, leaves + parameters)})
    return rows


def zoo_calls(rows, target_s, sync):
    """Calls per round for each loss, the same for the entry and its references: enough for a timed block
    of about ``target_s`` at its first reference's speed, 1 to 100."""
    calls = {}
    for row in rows:
        if "missing" in row:
            continue
        if "ours:" + row["name"] not in calls:
            for _ in range(2):  # warm-up
                row["ref"]()
            sync()
            start = time.perf_counter()
            row["ref"]()
            sync()
            calls["ours:" + row["name"]] = max(1, min(100, round(target_s / max(time.perf_counter() - start, 1e-6))))
        calls[row["key"]] = calls["ours:" + row["name"]]
    return calls


def zoo_verdicts(rows, times, budget=ZOO_BUDGET):
    """Per row: ours and the reference's median ms, the median over rounds of ours/reference, the
    best-round ratio and PASS/FAIL (FAIL: over ``budget``, a value that differs, or no reference)."""
    results = []
    for row in rows:
        name = row["name"]
        if "missing" in row:
            results.append({"name": name, "verdict": "FAIL", "why": row["missing"]})
            continue
        ours, ref = times["ours:" + name], times[row["key"]]
        ratio = statistics.median(o / r for o, r in zip(ours, ref))
        why = []
        if ratio > budget:
            why.append(f"ratio {ratio:.3f} > {budget}")
        if row["same"] is False:
            why.append("its value differs from the reference's")
        results.append({
            "name": name, "reference": row["reference"], "same": row["same"],
            "ours_ms": statistics.median(ours) * 1e3, "ref_ms": statistics.median(ref) * 1e3,
            "ratio": ratio, "best_ratio": min(ours) / min(ref),
            "verdict": "FAIL" if why else "PASS", "why": "; ".join(why),
        })
    return results


def report_zoo(results, shape, rounds, device, budget=ZOO_BUDGET):
    """Print the table; returns the names of the losses that failed."""
    num_ids, k, dim, num_classes = shape
    print(f"\nregistered losses vs what each wraps: batch P×K = {num_ids}×{k} ({num_ids * k}×{dim}), "
          f"{num_classes} classes, {rounds} rounds, device {device}, torch threads {torch.get_num_threads()}")
    print(f"{'loss':<20} {'reference':<28} {'ours ms':>9} {'ref ms':>9} {'ours/ref':>9} {'best-round':>11} "
          f"{'value':>6}  verdict (budget {budget}×)")
    for r in results:
        if "ratio" not in r:
            print(f"{r['name']:<20} {'-':<28} {'-':>9} {'-':>9} {'-':>9} {'-':>11} {'-':>6}  FAIL: {r['why']}")
            continue
        value = {True: "same", False: "DIFF", None: "n/a"}[r["same"]]
        verdict = r["verdict"] + (": " + r["why"] if r["why"] else "")
        print(f"{r['name']:<20} {r['reference']:<28} {r['ours_ms']:>9.3f} {r['ref_ms']:>9.3f} {r['ratio']:>9.2f} "
              f"{r['best_ratio']:>11.2f} {value:>6}  {verdict}")
    print("ours/ref: median over rounds of the per-round ratio; best-round: fastest ours / fastest reference; "
          "value: the entry's loss is SCALE × the reference's (n/a: the reference is another loss)")
    failed = sorted({r["name"] for r in results if r["verdict"] == "FAIL"})
    rows_failed = sum(r["verdict"] == "FAIL" for r in results)
    print(f"{len(results) - rows_failed}/{len(results)} comparisons PASS"
          + (f"; FAIL: {', '.join(failed)}" if failed else ""))
    return failed


def run_zoo(args, device, sync):
    """The zoo table; returns the names of the losses that failed. Without ``--threads``, one torch thread."""
    threads = torch.get_num_threads()
    if not args.threads:
        torch.set_num_threads(1)
    try:
        features, targets, weight = make_batch(args.ids * args.k, args.dim, args.k, args.num_classes, args.seed)
        features, targets, weight = features.to(device), targets.to(device), weight.to(device)
        torch.manual_seed(args.seed)  # the classification entries' weights and CenterLoss's centres
        rows = zoo_rows(zoo_config(args.num_classes, args.dim), zoo_inputs(features, targets, weight), device)
        timed = [row for row in rows if "missing" not in row]
        fns, groups = {}, {}
        for row in timed:
            fns["ours:" + row["name"]] = row["ours"]
            fns[row["key"]] = row["ref"]
            groups.setdefault(row["name"], ["ours:" + row["name"]]).append(row["key"])
        calls = args.calls or zoo_calls(timed, args.block_ms / 1e3, sync)
        rounds = args.rounds or 15
        times = measure(fns, rounds, calls, args.seed, groups=list(groups.values()), sync=sync)
        return report_zoo(zoo_verdicts(rows, times), (args.ids, args.k, args.dim, args.num_classes), rounds, device)
    finally:
        torch.set_num_threads(threads)


def run_ewth(args, device, sync):
    for size in args.sizes:
        features, targets, weight = make_batch(size, args.dim, 4, args.num_classes, args.seed)
        fns = loss_fns(features.to(device), targets.to(device), weight.to(device))
        calls = args.calls or (10 if size <= 64 else 2)
        report(size, args.dim, measure(fns, args.rounds or 50, calls, args.seed, sync=sync))
        if args.profile:
            profile(fns, "HNEWTH", calls * 5)
            profile(fns, REFERENCE, calls * 5)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=("zoo", "ewth", "all"), default="zoo",
                        help="zoo: every registered loss vs what it wraps (default); ewth: the EWTH variants vs "
                             "fastreid's TriHard; all: both")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256],
                        help="ewth: batch sizes (K = 4 images per id)")
    parser.add_argument("--ids", type=int, default=16, help="zoo: identities per batch (P)")
    parser.add_argument("--k", type=int, default=4, help="zoo: images per identity (K)")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--num-classes", type=int, default=751, help="classifier rows (Market1501: 751)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default: 15 for zoo, 50 for ewth)")
    parser.add_argument("--calls", type=int, default=0,
                        help="calls per round (default: zoo, enough for --block-ms per loss; ewth, 10 for N<=64, "
                             "else 2)")
    parser.add_argument("--block-ms", type=float, default=20.0,
                        help="zoo: a timed block lasts about this long when --calls is not given")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: 1 for zoo, which times per-call overhead; torch's choice for "
                             "ewth)")
    parser.add_argument("--profile", action="store_true", help="ewth: also print a torch.profiler table for HNEWTH")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    for size in args.sizes:
        if size % 4:
            parser.error(f"--sizes {size}: batch sizes must be multiples of K = 4")
    if args.ids < 2 or args.k < 2:
        parser.error("--ids and --k must be >= 2: the metric losses need positives and negatives")
    if args.ids > args.num_classes:
        parser.error(f"--ids {args.ids} is more than --num-classes {args.num_classes}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    sync = torch.cuda.synchronize if device.type == "cuda" else no_sync
    if args.threads:
        torch.set_num_threads(args.threads)

    failed = []
    if args.suite in ("zoo", "all"):
        failed = run_zoo(args, device, sync)
    if args.suite in ("ewth", "all"):
        run_ewth(args, device, sync)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
