#!/usr/bin/env python
"""Load balance and memory for the Pratley & McEwen (2019) set-up, naive vs balanced.

The plan table needs no MPI launch: for 2, 4, ..., 1024 ranks it computes the w-stacks
(k-means, one stack per rank as in the paper), the per-sample loads of eq. 8 and both
distributions (naive: stack k on rank k mod n; balanced: prefix-sum cuts), then prints
max/mean load, peak memory per rank and the Alltoallv volume per operator application.

    python scripts/bench_scaling.py [--max-ranks 1024] [--json out.json]
    python scripts/bench_scaling.py --timing   # 1 vs 2 rank wall clock: not implemented yet

Memory per rank counts samples (uvw, vis, weight, stack index), grid tiles, owned stack
grids, replicated images and kernel tables (``--kernel-storage sparse`` counts PURIFY-style
precomputed [GC] and [GC]^H instead, the storage the paper reports).
"""

import argparse
import json
import sys
import time


def plan_table(max_ranks=1024, nbins=100_000, kernel_storage="table", method="cuts"):
    from radimg.parallel.plan import paper_plan, paper_setup

    rows = []
    n = 2
    while n <= max_ranks:
        t0 = time.perf_counter()
        p = paper_plan(n, nbins=nbins, kernel_storage=kernel_storage, method=method)
        dt = time.perf_counter() - t0
        b, nv = p["balanced"], p["naive"]
        rows.append(
            {
                "n_ranks": n,
                "nstacks": p["stacks"]["nstacks"],
                "max_support": max(p["stacks"]["max_support"]),
                "balanced_max_over_mean": b["max_over_mean"],
                "naive_max_over_mean": nv["max_over_mean"],
                "balanced_peak_memory_bytes": b["peak_memory_bytes"],
                "naive_peak_memory_bytes": nv["peak_memory_bytes"],
                "balanced_samples_max_over_mean": max(b["samples_per_rank"])
                * n
                / sum(b["samples_per_rank"]),
                "balanced_comm_bytes_per_apply": b["comm_bytes_per_apply"],
                "naive_comm_bytes_per_apply": nv["comm_bytes_per_apply"],
                "plan_seconds": dt,
            }
        )
        n *= 2
    return {
        "setup": paper_setup(),
        "kernel_storage": kernel_storage,
        "assignment": method,
        "rows": rows,
    }


def format_table(res):
    gib = 2.0**30
    head = (
        f"{'ranks':>6} {'stacks':>6} {'Jmax':>5} {'naive max/mean':>15} {'balanced max/mean':>18} "
        f"{'naive peak GiB':>15} {'balanced peak GiB':>18} {'a2a GiB/apply':>14}"
    )
    lines = [
        'Pratley & McEwen (2019) set-up: 2e9 samples, 1024^2 x 90", J_min = 4, '
        f"w ~ N(0, 200) |w| <= 600; kernels: {res['kernel_storage']}; cuts: {res['assignment']}",
        head,
        "-" * len(head),
    ]
    for r in res["rows"]:
        lines.append(
            f"{r['n_ranks']:>6} {r['nstacks']:>6} {r['max_support']:>5} {r['naive_max_over_mean']:>15.4f} "
            f"{r['balanced_max_over_mean']:>18.6f} {r['naive_peak_memory_bytes'] / gib:>15.2f} "
            f"{r['balanced_peak_memory_bytes'] / gib:>18.2f} {r['balanced_comm_bytes_per_apply'] / gib:>14.3f}"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--max-ranks", type=int, default=1024)
    ap.add_argument("--nbins", type=int, default=100_000, help="w histogram bins (default 1e5)")
    ap.add_argument("--kernel-storage", choices=("table", "sparse"), default="table")
    ap.add_argument("--method", choices=("cuts", "paper"), default="cuts", help="balanced cut rule")
    ap.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    ap.add_argument(
        "--timing",
        action="store_true",
        help="STUB: 1-vs-2-rank wall-clock of the distributed operator (added once it exists)",
    )
    args = ap.parse_args(argv)
    if args.timing:
        print(
            "bench_scaling: --timing is not implemented yet (needs the distributed operator)",
            file=sys.stderr,
        )
        return 2
    res = plan_table(args.max_ranks, args.nbins, args.kernel_storage, args.method)
    print(format_table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
