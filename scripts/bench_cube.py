#!/usr/bin/env python
"""Dirty-cube imaging cost (issue #15 check): time per output channel and peak memory per
rank against ``image.channels_out`` and the rank count, on pyuvdata's real MWA snapshot
(10 channels 171-200 MHz, XX XY YX YY, 72.6k samples), Stokes I and IQUV.

Each case is ``mpiexec -n RANKS radimg run CFG`` (natural weighting, ``wterm.mode: auto``,
epsilon 1e-5, one thread per rank, no deconvolution) on a copy of the MS under ``--work``;
the figures come from the product's ``/run`` ``timings_json`` (per-stage wall time on rank
0, peak RSS per rank; "net" is that minus an idle radimg process's RSS) and ``radimg plan
--json`` of the same config (the planned peak per rank: for a cube the largest output
channel plus what the cube holds for the whole run). "per channel" is the imaging time
(operator set-up, weights, PSF, beam, dirty image: everything after the read) over
``channels_out``; "operators" is the number of operators built (Stokes products of one
output channel share one where their flags allow).

    python scripts/bench_cube.py --work /tmp/me/bench_cube [--npix 512] [--cell-arcsec 50]
        [--channels 1 2 4 8] [--ranks 1 2] [--stokes I IQUV] [--json out/bench_cube.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import time

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench_memory import _mpiexec, _radimg, baseline_rss  # noqa: E402

MIB = 2.0**20
IMAGING = ("operator setup", "weights", "psf", "beam", "dirty")


def _real_ms():
    import pyuvdata

    return pathlib.Path(pyuvdata.__file__).parent / "data" / "1102865728_small.ms"


def _config(ms, npix, cell, stokes, nc, out):
    return {
        "input": {"ms": str(ms)},
        "image": {"npix": npix, "cell_arcsec": cell, "weighting": "natural",
                  "stokes": stokes, "channels_out": nc},
        "wterm": {"mode": "auto", "epsilon": 1e-5},
        "gridder": {"nthreads": 1, "precision": "single"},
        "deconvolution": {"algorithm": "none"},
        "output": {"path": str(out), "overwrite": True, "checkpoint": False},
    }


def run_case(work, ms, npix, cell, stokes, nc, ranks):
    import h5py

    name = f"{stokes}-c{nc}-n{ranks}"
    out = work / f"{name}.h5"
    cfg = work / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(_config(ms, npix, cell, stokes, nc, out)))
    plan = json.loads(subprocess.run(
        _radimg() + ["plan", str(cfg), "--ranks", str(ranks), "--json"],
        capture_output=True, text=True, check=True).stdout)
    t0 = time.perf_counter()
    proc = subprocess.run(_mpiexec(ranks) + _radimg() + ["run", str(cfg)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: radimg run exit {proc.returncode}\n{proc.stderr[-3000:]}")
    with h5py.File(out) as f:
        t = json.loads(f["run"].attrs["timings_json"])
    r0 = t["rank0"]
    imaging = sum(r0.get(k, 0.0) for k in IMAGING)
    mem_plan = plan["balanced"]["memory_per_rank_bytes"]
    cube_plan = plan.get("cube")
    if cube_plan:  # the plan's peak over output channels
        mem_plan = cube_plan["peak_per_rank_bytes"]
    return {
        "stokes": stokes, "channels_out": nc, "ranks": ranks, "wall_s": wall,
        "stages_rank0_s": r0, "imaging_s": imaging, "per_channel_s": imaging / nc,
        "operators": (proc.stdout + proc.stderr).count("w-term: "),  # one line per operator
        "peak_rss_bytes_per_rank": t["peak_rss_bytes_per_rank"],
        "planned_bytes_per_rank": mem_plan,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="scratch directory (MS copy, products)")
    ap.add_argument("--ms", default=None, help="MS (default: pyuvdata's MWA snapshot)")
    ap.add_argument("--npix", type=int, default=512)
    ap.add_argument("--cell-arcsec", type=float, default=50.0)
    ap.add_argument("--channels", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--stokes", nargs="+", default=["I", "IQUV"])
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ms = work / "input.ms"
    if not ms.exists():  # radimg opens it read-only; a copy all the same (house rule)
        shutil.copytree(args.ms or _real_ms(), ms)
    base = {n: baseline_rss(n) for n in args.ranks}
    # warm-ups, so that numba's cache and the kernel-table/FFTW caches (RADIMG_CACHE_DIR) of
    # every output channel's geometry are filled before timing (a cold cache cost the first
    # channels_out 8 run 12 s of table building and 270 MiB)
    for nc in args.channels:
        run_case(work, ms, args.npix, args.cell_arcsec, "I", nc, 1)
    rows = []
    for stokes in args.stokes:
        for n in args.ranks:
            for nc in args.channels:
                r = run_case(work, ms, args.npix, args.cell_arcsec, stokes, nc, n)
                r["baseline_rss_bytes_per_rank"] = base[n]
                rows.append(r)
                print(f"  {stokes} channels_out {nc} ranks {n}: {r['imaging_s']:.2f} s",
                      file=sys.stderr, flush=True)
    print(f"{args.npix} x {args.cell_arcsec:g}\" , natural, wterm auto, eps 1e-5, single, "
          "1 thread per rank")
    print(f"{'stokes':<6} {'ch':>3} {'ranks':>5} {'ops':>4} {'imaging s':>9} "
          f"{'s/channel':>9} {'peak RSS MiB/rank':>18} {'net MiB/rank':>13} "
          f"{'plan MiB/rank':>14}")
    for r in rows:
        rss = "/".join(f"{b / MIB:.0f}" for b in r["peak_rss_bytes_per_rank"])
        net = "/".join(f"{(b - i) / MIB:.0f}" for b, i in zip(
            r["peak_rss_bytes_per_rank"], r["baseline_rss_bytes_per_rank"], strict=True))
        pl = r["planned_bytes_per_rank"]
        pl = "-" if pl is None else "/".join(f"{b / MIB:.0f}" for b in pl)
        print(f"{r['stokes']:<6} {r['channels_out']:>3} {r['ranks']:>5} {r['operators']:>4} "
              f"{r['imaging_s']:>9.2f} {r['per_channel_s']:>9.2f} {rss:>18} {net:>13} "
              f"{pl:>14}")
    print("idle radimg process RSS (MiB/rank): " + "; ".join(
        f"{n} ranks " + "/".join(f"{b / MIB:.0f}" for b in base[n]) for n in args.ranks))
    if args.json:
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(json.dumps(
            {"npix": args.npix, "cell_arcsec": args.cell_arcsec, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
