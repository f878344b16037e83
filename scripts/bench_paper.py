#!/usr/bin/env python
"""Pratley & McEwen (2019) through ``radimg run``: SNR, load and memory tables (issue #16).

    python scripts/bench_paper.py --npix 256 --rows 50000 --json out/paper/bench.json
    python scripts/bench_paper.py --npix 1024 --rows 2000000 --tables snr   # the paper's size

Tables:

- ``snr``: configs/paper_admm.yaml and configs/paper_clean.yaml (the same simulated MS:
  Gaussian uvw, |w| <= 600 lambda, input SNR 30 dB, the galaxy of scripts/make_galaxy.py) at
  1 and 3 ranks (``mpiexec -n R radimg run``), scored by scripts/paper_snr.py: ADMM's model
  against the true image (the paper's metric), CLEAN's restored image against the true image
  convolved with the restoring beam (both figures are printed for both). ``--truth smooth``:
  the same with the galaxy band-limited to the uv coverage (make_galaxy.py
  ``--smooth-uv-sigma-lambda`` at the coverage's sigma; its own simulated MS and products,
  suffixed ``_smooth``); ``--snr-ranks`` and ``--algorithms`` choose the runs.
- ``load``: at 2, 4, 8 and 16 ranks (oversubscribed: work is counted, not timed), the
  operator's own w-stacks (``--nstacks ranks``: one per rank, the paper's set-up), on the
  same paper-like w distribution, ``mpiexec -n R radimg run`` (no deconvolution) twice: balanced (as shipped)
  and naive (the same run with the distributed operator's measurement-only
  ``balance="naive"``: stack k's samples on rank k mod R, which owns that stack; no config
  key, the script switches it). Per rank,
  from the product's ``load_balance_json`` / ``timings_json``: samples, kernel cells per
  adjoint application as the kernels counted them (``grid_cells``; the balancer's ``load``
  beside it), tiles and bytes sent/received per application, stacks owned, peak RSS; next to
  each, ``radimg plan --json`` for the same config (its balanced and naive schemes).
- ``memory``: the paper's 50-node set-up from the planner's public functions
  (radimg.parallel.plan.paper_plan): PURIFY's precomputed sparse [GC] and [GC]^H (the storage
  the paper reports, ~21 GB per node for [GC]) next to radimg's on-the-fly kernels (tables).

The size defaults keep one run of every table near 15 minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAPER_CELL_NPIX = 90.0 * 1024  # arcsec x pixels: the paper's 25.6 deg field


def paper_sets(npix, rows, out, truth="galaxy"):
    """--set arguments for the paper configs at ``npix`` over the paper's field, with the
    true image of kind ``truth`` (its own simulated MS)."""
    cell = PAPER_CELL_NPIX / npix
    umax = 1.0 / (2 * cell / 206264.80624709636)  # 1/(2 cell): the paper's pi radians
    return [
        f"image.npix={npix}", f"image.cell_arcsec={cell:g}",
        f"simulate.uv_sigma_lambda={umax / 3:.6g}", f"simulate.uv_max_lambda={0.999 * umax:.6g}",
        f"simulate.gaussian_rows={rows}",
        f"simulate.sky_image={out}/galaxy_{npix}{truth_tag(truth)}.fits",
        f"input.ms={out}/paper_{npix}_{rows}{truth_tag(truth)}.ms",
    ]


def uv_sigma_lambda(npix):
    """The paper configs' Gaussian uv sigma at ``npix``: a third of 1/(2 cell)."""
    cell = PAPER_CELL_NPIX / npix
    return 1.0 / (2 * cell / 206264.80624709636) / 3


def truth_tag(truth):
    """File-name suffix of a truth kind: '' for the galaxy as drawn, '_smooth' for the
    band-limited one."""
    return "" if truth == "galaxy" else f"_{truth}"


def ensure_galaxy(npix, out, truth="galaxy"):
    """The true image (scripts/make_galaxy.py) for ``truth``: ``galaxy`` (as drawn) or
    ``smooth`` (its spectrum times the uv coverage's Gaussian, ``--smooth-uv-sigma-lambda``
    = :func:`uv_sigma_lambda`)."""
    path = pathlib.Path(out) / f"galaxy_{npix}{truth_tag(truth)}.fits"
    if not path.exists():
        cmd = [sys.executable, str(ROOT / "scripts" / "make_galaxy.py"), "--npix",
               str(npix), "--cell-arcsec", f"{PAPER_CELL_NPIX / npix:g}", "--ra",
               "10.68", "--dec", "41.27", "--flux-jy", "100", "--out", str(path)]
        if truth == "smooth":
            cmd += ["--smooth-uv-sigma-lambda", f"{uv_sigma_lambda(npix):.6g}"]
        subprocess.run(cmd, check=True)
    return path


def radimg_run(ranks, config, sets, log):
    cmd = ["mpiexec", "-n", str(ranks), "radimg", "run", str(config)]
    for s in sets:
        cmd += ["--set", s]
    print("$", " ".join(cmd), flush=True)
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)


def snr_table(a, sets, truth):
    sys.path.insert(0, str(ROOT / "scripts"))
    from paper_snr import product_snr

    rows = []
    tag = truth_tag(a.truth)
    for alg in a.algorithms:
        for ranks in a.snr_ranks:
            prod = f"{a.out}/{alg}_{a.npix}{tag}_r{ranks}.h5"
            extra = [f"output.path={prod}"]
            if alg == "admm":
                extra.append(f"deconvolution.niter={a.niter}")
            radimg_run(ranks, ROOT / "configs" / f"paper_{alg}.yaml", sets + extra,
                       f"{a.out}/{alg}_{a.npix}{tag}_r{ranks}.log")
            r = product_snr(prod, truth)
            rows.append({"algorithm": alg, "n_ranks": ranks, "truth_kind": a.truth, **r})
            print(f"{alg:5s} {ranks} ranks ({a.truth}): model {r['model_snr_db']:6.2f} dB, restored "
                  f"{r['restored_snr_db']:6.2f} dB, {r['deconvolution']}", flush=True)
    return rows


def _plan(ranks, sets):
    cmd = ["radimg", "plan", str(ROOT / "configs" / "paper_admm.yaml"), "--ranks", str(ranks),
           "--json"]
    for s in sets:
        cmd += ["--set", s]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


NAIVE_WORKER = """
import sys
import radimg.parallel.operator as po

# measurement only (bench_paper's naive column): the distributed operator in its naive
# scheme (balance='naive': stack k's samples on rank k mod n, which owns it), the rest of
# `radimg run` unchanged
_init = po.DistributedOperator.__init__


def _naive(self, *a, **kw):
    kw["balance"] = "naive"
    _init(self, *a, **kw)


po.DistributedOperator.__init__ = _naive
from radimg.cli import main

sys.exit(main(sys.argv[1:]))
"""


def radimg_run_naive(ranks, config, sets, log):
    """``radimg run`` with the operator's naive scheme (no config key: measurement only)."""
    cmd = ["mpiexec", "-n", str(ranks), sys.executable, "-c", NAIVE_WORKER, "run", str(config)]
    for s in sets:
        cmd += ["--set", s]
    print("$ [naive]", " ".join(cmd[:3] + ["python", "-c", "NAIVE_WORKER"] + cmd[6:]), flush=True)
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)


LOAD_KEYS = ("nsamples", "load", "grid_cells", "n_hdot", "tiles_sent", "tiles_recv",
             "bytes_sent", "bytes_recv", "planes_owned")


def _measured(prod, ranks):
    """Per-rank figures of a product: the operator's load_balance() (``/run``
    load_balance_json, top level) and the peak RSS (timings_json)."""
    from radimg.io.product import read_product

    p = read_product(prod, images=False)
    lb = p["load_balance"] or {}
    out = {}
    for k in LOAD_KEYS:
        v = lb.get(k)
        if not (isinstance(v, list) and len(v) == ranks):
            raise RuntimeError(f"{prod}: load_balance_json has no per-rank {k!r} "
                               f"(keys: {sorted(lb)})")
        out[k] = [int(x) for x in v]
    out["peak_rss_bytes"] = _peak_memory(p["timings"], ranks)
    return out


def _mom(v):
    v = [float(x) for x in v]
    m = sum(v) / len(v)
    return max(v) / m if m > 0 else 1.0


def load_table(a, sets):
    """Balanced (``radimg run``) and naive (the same run, operator in its naive scheme) at
    each rank count, next to ``radimg plan``. Stacks: ``--nstacks`` (``auto``: the operator's
    own count, dealt round-robin in the naive scheme; ``ranks``: one per rank, the paper's
    set-up, whose kernel tables over the wide |w - w_k| of 2-4 stacks cost minutes and GBs
    to build on a 25 deg field)."""
    out = []
    isz = 16  # complex128: the paper configs grid in double precision
    for ranks in a.ranks:
        nst = ranks if a.nstacks == "ranks" else a.nstacks
        base = sets + ["deconvolution.algorithm=none", "input.simulate=false",
                       f"wterm.nstacks={nst}", "output.checkpoint=false"]
        meas = {}
        for scheme in ("balanced", "naive"):
            prod = f"{a.out}/load_{a.npix}_{a.rows}_r{ranks}_{scheme}.h5"
            log = f"{a.out}/load_r{ranks}_{scheme}.log"
            run = radimg_run if scheme == "balanced" else radimg_run_naive
            run(ranks, ROOT / "configs" / "paper_admm.yaml", base + [f"output.path={prod}"], log)
            meas[scheme] = _measured(prod, ranks)
        plan = _plan(ranks, base)
        row = {"n_ranks": ranks, "nstacks": plan["stacks"]["nstacks"],
               "measured": meas, "planned": {}}
        for scheme in ("balanced", "naive"):
            b = plan[scheme]
            row["planned"][scheme] = {
                "samples": b["samples_per_rank"], "load": b["load_per_rank"],
                "memory_bytes": b["memory_per_rank_bytes"],
                "recv_bytes": [c * isz for c in b["exchange_cells"]["recv"]],
                "send_bytes": [c * isz for c in b["exchange_cells"]["send"]],
                "max_over_mean": b["max_over_mean"]}
        if isinstance(plan.get("exchange"), dict):
            row["planned"]["balanced_exchange_samples"] = plan["exchange"].get("samples")
        for scheme in ("balanced", "naive"):
            m = meas[scheme]
            row[f"{scheme}_grid_cells_max_over_mean"] = _mom(m["grid_cells"])
        out.append(row)
        print(f"{ranks:3d} ranks ({row['nstacks']} stacks): kernel cells per adjoint, max/mean: "
              f"balanced {row['balanced_grid_cells_max_over_mean']:.4f} (plan "
              f"{plan['balanced']['max_over_mean']:.4f}), naive "
              f"{row['naive_grid_cells_max_over_mean']:.4f} (plan "
              f"{plan['naive']['max_over_mean']:.4f})", flush=True)
        for scheme in ("balanced", "naive"):
            m, pl = meas[scheme], row["planned"][scheme]
            for r in range(ranks):
                rss = m["peak_rss_bytes"]
                print(f"  {scheme:8s} rank {r:2d}: samples {m['nsamples'][r]:7d} (plan "
                      f"{pl['samples'][r]:7d}), kernel cells {m['grid_cells'][r]:.4g} "
                      f"(balancer {m['load'][r]:.4g}, plan {pl['load'][r]:.4g}), tiles "
                      f"sent/recv {m['tiles_sent'][r]}/{m['tiles_recv'][r]}, MiB sent/recv "
                      f"{m['bytes_sent'][r] / 2**20:.1f}/{m['bytes_recv'][r] / 2**20:.1f} (plan "
                      f"{pl['send_bytes'][r] / 2**20:.1f}/{pl['recv_bytes'][r] / 2**20:.1f}), "
                      f"stacks owned {m['planes_owned'][r]}, peak RSS "
                      f"{_fmt(rss[r] if rss else None)} (plan {_fmt(pl['memory_bytes'][r])})",
                      flush=True)
    return out


def _fmt(n):
    return "?" if n is None else f"{n / 2**20:.0f} MiB"


def _peak_memory(timings, ranks):
    """Peak RSS per rank (bytes) from the product's timings_json."""
    v = timings.get("peak_rss_bytes_per_rank") if isinstance(timings, dict) else None
    if isinstance(v, list) and len(v) == ranks:
        return [int(x) for x in v]
    return None


def memory_table():
    """The paper's 50 nodes: PURIFY's sparse [GC] + [GC]^H vs radimg's kernel tables."""
    from radimg.parallel.plan import paper_plan, paper_setup

    s = paper_setup()
    rows = {}
    for storage in ("sparse", "table"):
        for support in ("eq8", "tables"):
            try:
                p = paper_plan(50, kernel_storage=storage, support_model=support, nbins=20_000)
            except Exception as exc:  # noqa: BLE001 - a model the planner cannot build is reported
                rows[f"{storage}/{support}"] = {"error": str(exc)}
                continue
            per = {}
            for scheme in ("balanced", "naive"):
                b = p[scheme]
                br = b["memory_breakdown"]
                per[scheme] = {
                    "peak_memory_bytes": b["peak_memory_bytes"],
                    "memory_per_rank_bytes_min_max": [min(b["memory_per_rank_bytes"]),
                                                      max(b["memory_per_rank_bytes"])],
                    "kernels_bytes_min_max": [min(br.get("kernels", [0])),
                                              max(br.get("kernels", [0]))],
                    "kernel_cells_total": float(sum(b["load_per_rank"])),
                    "max_over_mean": b["max_over_mean"],
                }
            rows[f"{storage}/{support}"] = per
            bk, nk = per["balanced"]["kernels_bytes_min_max"], per["naive"]["kernels_bytes_min_max"]
            print(f"kernels {storage:6s} supports {support:6s}: per node balanced peak "
                  f"{per['balanced']['peak_memory_bytes'] / 1e9:7.2f} GB (kernels "
                  f"{bk[1] / 1e9:.2f} GB), naive peak {per['naive']['peak_memory_bytes'] / 1e9:7.2f}"
                  f" GB (kernels {nk[0] / 1e9:.2f}-{nk[1] / 1e9:.2f} GB); total kernel cells "
                  f"{per['balanced']['kernel_cells_total']:.3g}", flush=True)
    print(f"paper (sec. 5, {s['n_samples']:.0e} samples, 50 nodes): [GC] ~21 GB per node "
          "(3 TB in all) plus as much again for [GC]^H; 32 GB of visibilities and 64 GB of "
          "uvw + weights over the cluster; each [GC]_k 1-50 GB under the naive scheme")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npix", type=int, default=256)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--niter", type=int, default=100, help="ADMM iterations at most")
    ap.add_argument("--ranks", default="2,4,8,16", help="rank counts of the load table")
    ap.add_argument("--nstacks", default="auto",
                    help="load table: wterm.nstacks (auto, an integer, or 'ranks': one per rank)")
    ap.add_argument("--tables", default="snr,load,memory")
    ap.add_argument("--truth", choices=("galaxy", "smooth"), default="galaxy",
                    help="snr table: the galaxy as drawn, or band-limited to the uv coverage "
                         "(make_galaxy.py --smooth-uv-sigma-lambda at the coverage's sigma)")
    ap.add_argument("--snr-ranks", default="1,3", help="rank counts of the snr table")
    ap.add_argument("--algorithms", default="admm,clean", help="snr table: admm, clean or both")
    ap.add_argument("--out", default="out/paper")
    ap.add_argument("--set", action="append", default=[], dest="extra",
                    help="extra radimg --set for every run (e.g. wterm.epsilon=1e-4)")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    a.ranks = [int(x) for x in a.ranks.split(",")]
    a.snr_ranks = [int(x) for x in a.snr_ranks.split(",")]
    a.algorithms = [x for x in a.algorithms.split(",") if x]
    if not set(a.algorithms) <= {"admm", "clean"}:
        ap.error("--algorithms takes admm, clean or admm,clean")
    tables = set(a.tables.split(","))
    os.makedirs(a.out, exist_ok=True)
    a.out = os.path.abspath(a.out)
    truth = ensure_galaxy(a.npix, a.out, a.truth)
    sets = paper_sets(a.npix, a.rows, a.out, a.truth) + a.extra
    res = {"npix": a.npix, "rows": a.rows, "truth": a.truth, "sets": sets}
    if "snr" in tables:
        res["snr"] = snr_table(a, sets, truth)
    if "load" in tables:
        if "snr" not in tables and not pathlib.Path(f"{a.out}/paper_{a.npix}_{a.rows}{truth_tag(a.truth)}.ms").exists():
            radimg_run(1, ROOT / "configs" / "paper_admm.yaml",
                       sets + ["deconvolution.algorithm=none",
                               f"output.path={a.out}/sim_{a.npix}.h5"], f"{a.out}/sim.log")
        res["load"] = load_table(a, sets)
    if "memory" in tables:
        res["memory"] = memory_table()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
