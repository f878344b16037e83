#!/usr/bin/env python
"""Load balance and memory for the Pratley & McEwen (2019) set-up, naive vs balanced.

The plan table needs no MPI launch: for 2, 4, ..., 1024 ranks it computes the w-stacks
(k-means, one stack per rank as in the paper), the per-sample loads of eq. 8 and both
distributions (naive: stack k on rank k mod n; balanced: prefix-sum cuts), then prints
max/mean load, peak memory per rank and the Alltoallv volume per operator application.

    python scripts/bench_scaling.py [--max-ranks 1024] [--json out.json]
    python scripts/bench_scaling.py --timing [--scale 0.05]   # 1 vs 2 rank wall clock

``--timing`` launches itself under ``mpiexec -n 1`` and ``-n 2`` (one numba thread per rank)
and times set-up, ``hdot`` and ``dot`` of radimg.parallel.operator.DistributedOperator on
~10**7 samples (``--scale`` multiplies the sample count for a quick run), then prints the
speed-up.

Memory per rank counts samples (uvw, vis, weight, stack index), grid tiles, owned stack
grids, replicated images and kernel tables (``--kernel-storage sparse`` counts PURIFY-style
precomputed [GC] and [GC]^H instead, the storage the paper reports).
"""

import argparse
import json
import sys
import time


def plan_table(max_ranks=1024, nbins=100_000, kernel_storage="table", method="cuts",
               support_model="eq8", min_ranks=2, epsilon=1e-5):
    from radimg.parallel.plan import paper_plan, paper_setup

    rows = []
    n = min_ranks
    while n <= max_ranks:
        t0 = time.perf_counter()
        p = paper_plan(n, nbins=nbins, kernel_storage=kernel_storage, method=method,
                       support_model=support_model, epsilon=epsilon)
        dt = time.perf_counter() - t0
        b, nv = p["balanced"], p["naive"]
        rows.append(
            {
                "n_ranks": n,
                "nstacks": p["stacks"]["nstacks"],
                "max_support": max(p["stacks"]["max_support"]),
                "J_min": p["geometry"]["J_min"],
                "total_load": sum(p["balanced"]["load_per_rank"]),
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
        "support_model": support_model,
        "epsilon": epsilon,
        "rows": rows,
    }


def format_table(res):
    gib = 2.0**30
    head = (
        f"{'ranks':>6} {'stacks':>6} {'Jmax':>5} {'naive max/mean':>15} {'balanced max/mean':>18} "
        f"{'naive peak GiB':>15} {'balanced peak GiB':>18} {'a2a GiB/apply':>14}"
    )
    sm = res.get("support_model", "eq8")
    jm = res["rows"][0]["J_min"] if res["rows"] else 4
    supp = (
        "supports of eq. 8"
        if sm == "eq8"
        else f"supports from radimg's w-kernel tables at eps {res['epsilon']:g}"
    )
    lines = [
        f'Pratley & McEwen (2019) set-up: 2e9 samples, 1024^2 x 90", J_min = {jm}, '
        f"w ~ N(0, 200) |w| <= 600; {supp}; kernels: {res['kernel_storage']}; "
        f"cuts: {res['assignment']}",
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


def _timing_worker(args):
    """Run under mpiexec: time the distributed operator, print one JSON line on rank 0."""
    import numpy as np
    from mpi4py import MPI

    from radimg.parallel.mpi import install_abort_handler
    from radimg.parallel.operator import DistributedOperator

    comm = MPI.COMM_WORLD
    install_abort_handler(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    nchan = 2
    nrow = max(1000, int(args.samples * args.scale) // nchan)
    freq = np.array([1.0e8, 1.2e8])
    npix = args.npix
    cell = np.deg2rad(args.fov_deg) / npix
    from radimg.constants import C_LIGHT as c

    lo, hi = rank * nrow // size, (rank + 1) * nrow // size
    # Same global data on any number of ranks: generate in fixed blocks, keep our slice.
    rng = np.random.default_rng(12345)
    r = np.sqrt(rng.random(nrow)) * 0.45 / cell  # uniform disc up to 0.45 of the grid
    th = rng.random(nrow) * 2 * np.pi
    wl = rng.normal(0.0, args.wmax / 3, nrow).clip(-args.wmax, args.wmax)
    uvw = np.stack([r * np.cos(th), r * np.sin(th), wl], axis=1)[lo:hi] * (c / freq[-1])
    wgt = np.ones((hi - lo, nchan), dtype=np.float32)
    del r, th, wl
    comm.Barrier()
    t0 = time.perf_counter()
    op = DistributedOperator(
        comm,
        uvw,
        freq,
        wgt,
        npix,
        npix,
        cell,
        mode=args.mode,
        epsilon=args.epsilon,
        oversampling=2.0,
        precision=args.precision,
    )
    comm.Barrier()
    t_setup = time.perf_counter() - t0
    vis = np.ones((op.nrow, nchan), dtype=op.cdtype)
    img = op.hdot(vis, op.weight)  # warm-up (numba compile / cache load)
    op.dot(img)
    th_, td_ = [], []
    for _ in range(args.repeat):
        comm.Barrier()
        t0 = time.perf_counter()
        img = op.hdot(vis, op.weight)
        comm.Barrier()
        t1 = time.perf_counter()
        op.dot(img)
        comm.Barrier()
        th_.append(t1 - t0)
        td_.append(time.perf_counter() - t1)
    lb = op.load_balance()
    serial = None
    if size == 1 and args.serial_baseline:
        # The serial operator on the same samples (1 thread): the distributed one at 1 rank
        # should cost the same; the speed-up is quoted against the faster of the two.
        if args.mode == "wstack-wproject":
            from radimg.ops.wproject import WProjectOperator as _Op

            skw = {}
        else:
            from radimg.ops.operator import WideFieldOperator as _Op

            skw = {"mode": args.mode}
        t0 = time.perf_counter()
        sop = _Op(uvw, freq, npix, npix, cell, epsilon=args.epsilon, oversampling=2.0,
                  precision=args.precision, weight_mask=wgt != 0, **skw)
        s_setup = time.perf_counter() - t0
        svis = np.ones((uvw.shape[0], nchan), dtype=sop.cdtype)
        simg = sop.hdot(svis, wgt)
        sop.dot(simg)
        sh, sd = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            simg = sop.hdot(svis, wgt)
            t1 = time.perf_counter()
            sop.dot(simg)
            sh.append(t1 - t0)
            sd.append(time.perf_counter() - t1)
        serial = {"setup_s": s_setup, "hdot_s": min(sh), "dot_s": min(sd)}
    if args.mode == "wstack-wproject":
        support, grid = int(op.op.W), list(op._grid_shape)
    else:
        support, grid = int(op.spec.W), [op.spec.nyp, op.spec.nxp]
    if rank == 0:
        print(
            "TIMING "
            + json.dumps(
                {
                    "ranks": size,
                    "threads_per_rank": 1,
                    "mode": args.mode,
                    "precision": args.precision,
                    "epsilon": args.epsilon,
                    "samples": int(sum(lb["nsamples"])),
                    "nplanes": op.nplanes,
                    "support": support,
                    "padded_grid": grid,
                    "load_total": int(sum(lb["load"])),
                    "samples_per_rank": lb["nsamples"],
                    "setup_s": t_setup,
                    "hdot_s": min(th_),
                    "dot_s": min(td_),
                    "load_max_over_mean": lb["load_max_over_mean"],
                    "bytes_per_apply": sum(lb["bytes_sent"]),
                    "serial_operator": serial,
                }
            ),
            flush=True,
        )
    return 0


def run_timing(args):
    """Launch the worker under mpiexec -n 1 and -n 2; print times and speed-up."""
    import os
    import pathlib
    import shutil
    import subprocess

    exe = pathlib.Path(sys.executable).with_name("mpiexec")
    mpiexec = str(exe) if exe.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        print("bench_scaling: no mpiexec found", file=sys.stderr)
        return 2
    repo = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("NUMBA_CACHE_DIR", str(repo / ".numba_cache"))
    env["NUMBA_NUM_THREADS"] = env["OMP_NUM_THREADS"] = "1"  # one core per rank
    worker = [
        sys.executable,
        str(pathlib.Path(__file__).resolve()),
        "--timing-worker",
        "--scale",
        str(args.scale),
        "--samples",
        str(args.samples),
        "--mode",
        args.mode,
        "--epsilon",
        str(args.epsilon),
        "--npix",
        str(args.npix),
        "--fov-deg",
        str(args.fov_deg),
        "--wmax",
        str(args.wmax),
        "--repeat",
        str(args.repeat),
        "--precision",
        args.precision,
    ] + (["--serial-baseline"] if args.serial_baseline else [])
    res = {}
    for n in (1, 2):
        p = subprocess.run(
            [mpiexec, "-n", str(n), *worker],
            capture_output=True,
            text=True,
            env=env,
            timeout=args.timeout,
        )
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("TIMING ")]
        if p.returncode != 0 or not lines:
            print(
                f"bench_scaling: mpiexec -n {n} failed (rc {p.returncode})\n"
                f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}",
                file=sys.stderr,
            )
            return 1
        res[n] = json.loads(lines[-1][7:])
    r1 = res[1]
    print(
        f"DistributedOperator timing: {r1['samples']:.3g} samples, mode {args.mode}, "
        f"eps {args.epsilon:g}, {args.npix}^2 image, {r1['nplanes']} planes, W={r1['support']}, "
        f"padded grid {r1['padded_grid'][0]}x{r1['padded_grid'][1]}, {args.precision}; "
        "1 thread per rank (2 ranks x 1 thread vs 1 rank x 1 thread)"
    )
    if r1.get("serial_operator"):
        so = r1["serial_operator"]
        print(
            f"serial operator, 1 process x 1 thread: setup {so['setup_s']:.2f} s, "
            f"hdot {so['hdot_s']:.2f} s, dot {so['dot_s']:.2f} s"
        )
    head = f"{'ranks':>5} {'setup s':>9} {'hdot s':>9} {'dot s':>9} {'hdot+dot s':>11} {'speed-up':>9} {'load max/mean':>14} {'a2a MB/apply':>13}"
    print(head)
    print("-" * len(head))
    base = r1["hdot_s"] + r1["dot_s"]
    for n in (1, 2):
        r = res[n]
        t = r["hdot_s"] + r["dot_s"]
        print(
            f"{n:>5} {r['setup_s']:>9.2f} {r['hdot_s']:>9.2f} {r['dot_s']:>9.2f} {t:>11.2f} "
            f"{base / t:>9.2f} {r['load_max_over_mean']:>14.4f} {r['bytes_per_apply'] / 1e6:>13.1f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--max-ranks", type=int, default=1024)
    ap.add_argument("--min-ranks", type=int, default=2)
    ap.add_argument(
        "--support-model",
        choices=("eq8", "tables"),
        default="eq8",
        help="plan table: paper eq. 8 with J_min = 4 (default), or the supports of radimg's "
        "wstack-wproject kernel tables at --epsilon (slow below ~64 ranks: wide stacks)",
    )
    ap.add_argument("--nbins", type=int, default=100_000, help="w histogram bins (default 1e5)")
    ap.add_argument("--kernel-storage", choices=("table", "sparse"), default="table")
    ap.add_argument("--method", choices=("cuts", "paper"), default="cuts", help="balanced cut rule")
    ap.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    ap.add_argument(
        "--timing",
        action="store_true",
        help="1-vs-2-rank wall clock of hdot+dot of the distributed operator (launches mpiexec)",
    )
    ap.add_argument("--timing-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="--timing: multiply the sample count (e.g. 0.05 for a quick run)",
    )
    ap.add_argument("--samples", type=float, default=1e7, help="--timing: samples (row x chan)")
    ap.add_argument("--mode", choices=("none", "wstack", "wstack-wproject"), default="wstack")
    ap.add_argument("--precision", choices=("single", "double"), default="double")
    ap.add_argument(
        "--serial-baseline",
        action="store_true",
        help="--timing: also time the serial operator in the 1-rank launch",
    )
    ap.add_argument("--epsilon", type=float, default=None,
                    help="accuracy (default 1e-4 for --timing, 1e-5 for --support-model tables)")
    ap.add_argument("--npix", type=int, default=512)
    ap.add_argument("--fov-deg", type=float, default=10.0)
    ap.add_argument("--wmax", type=float, default=300.0, help="--timing: max |w| (wavelengths)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800.0, help="--timing: per launch (s)")
    args = ap.parse_args(argv)
    if args.timing or args.timing_worker:
        args.epsilon = 1e-4 if args.epsilon is None else args.epsilon
    if args.timing_worker:
        return _timing_worker(args)
    if args.timing:
        return run_timing(args)
    res = plan_table(args.max_ranks, args.nbins, args.kernel_storage, args.method,
                     args.support_model, args.min_ranks,
                     1e-5 if args.epsilon is None else args.epsilon)
    print(format_table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
