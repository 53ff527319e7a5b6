#!/usr/bin/env python
"""Forward+backward time of every EWTH variant next to fastreid's own batch-hard ``triplet_loss``.

All losses run on the same batch in one process, interleaved round by round (order shuffled each
round), so a busy machine slows them alike; the table gives each loss's median time per call and
the median over rounds of its time divided by fastreid's TriHard time in the same round.

    python tools/bench_losses.py                       # batches 64×2048 and 256×2048
    python tools/bench_losses.py --sizes 64 --profile  # + torch.profiler tables (HNEWTH, fastreid)
    python tools/bench_losses.py --threads 1          # one thread: steadier when other jobs share the cores
"""
import argparse
import random
import statistics
import time

import fastreid_ewth  # noqa: F401  (first: makes fastreid importable on current Python/torch)
import torch
from fastreid.modeling.losses import triplet_loss

from fastreid_ewth.losses import EWTH_VARIANTS, ewth_loss

REFERENCE = "TH-fastreid"


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


def measure(fns, rounds, calls, seed):
    """Per name: list of seconds per call, one entry per round (same rounds for every name)."""
    rng = random.Random(seed)
    names = list(fns)
    for name in names:  # warm-up: allocator, thread pool, lazy inits
        for _ in range(3):
            fns[name]()
    times = {name: [] for name in names}
    for _ in range(rounds):
        rng.shuffle(names)
        for name in names:
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="batch sizes (K = 4 images per id)")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--num-classes", type=int, default=751, help="classifier rows (Market1501: 751)")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--calls", type=int, default=0, help="calls per round (default: 10 for N<=64, else 2)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler table for HNEWTH")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    for size in args.sizes:
        if size % 4:
            parser.error(f"--sizes {size}: batch sizes must be multiples of K = 4")
        features, targets, weight = make_batch(size, args.dim, 4, args.num_classes, args.seed)
        fns = loss_fns(features, targets, weight)
        calls = args.calls or (10 if size <= 64 else 2)
        report(size, args.dim, measure(fns, args.rounds, calls, args.seed))
        if args.profile:
            profile(fns, "HNEWTH", calls * 5)
            profile(fns, REFERENCE, calls * 5)


if __name__ == "__main__":
    main()
