#!/usr/bin/env python
"""Dirty image + PSF on a real Measurement Set, radimg vs WSClean, in one script run (issue #13).

Default case (the issue's headline): pyuvdata's real MWA snapshot (1102865728, 72.6 k
samples), 4096 x 30" (a 34 deg field), natural weighting, single precision, epsilon 1e-5,

    mpiexec -n 2 radimg run CFG              (deconvolution.algorithm: none)
    wsclean -use-wgridder -wgridder-accuracy 1e-5 -j 2 -make-psf -size 4096 4096
            -scale 30asec -weight natural -no-update-model-required -name WORK/ws MS

WSClean is asked for radimg's epsilon (``-wgridder-accuracy``; its own default is 1e-4, ten
times looser than radimg's default 1e-5, and both tools trade time for accuracy the same
way); ``--wsclean-default-accuracy`` leaves it at WSClean's default instead.

both on a private copy of the MS (WSClean writes into the MS it images). Reported, as a
table and as JSON (``--out``):

- wall time of each command, and the peak resident memory of its whole process tree summed
  over processes (``/proc`` polled every 0.1 s, so both tools are measured the same way), with
  radimg's own per-rank peaks (``ru_maxrss`` from the product's ``/run`` ``timings_json``)
  and WSClean's from ``/usr/bin/time -v`` next to it; and the peak proportional set size
  (PSS, ``/proc/PID/smaps_rollup``) of the tree, which counts pages shared between the
  ranks (their shared libraries, ~130 MiB per rank) once: what the job takes from the node;
- radimg's per-stage seconds (rank 0 and the max over ranks) from ``timings_json``, and
  WSClean's inversion time from its log;
- ``radimg plan --ranks N --json`` memory per rank next to the measured peak RSS minus the
  RSS of an idle radimg process (the plan leaves the interpreter out; as
  scripts/bench_memory.py);
- agreement: Pearson correlation and peak ratio of the dirty images and of the PSFs, and
  the largest PSF difference.

Small fast case (a few seconds)::

    python scripts/bench_wsclean.py --npix 512 --cell-arcsec 120 --out /tmp/b.json

The machine is shared: compare the two tools' figures from the same run, not across runs.
``--set section.key=value`` passes radimg config overrides (e.g. ``wterm.mode=wstack``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench_deconv import _hms  # noqa: E402  (WSClean's h:mm:ss.s log times)
from bench_memory import _mpiexec, _radimg, baseline_rss, bench_env  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 2.0**20


def default_ms():
    import pyuvdata

    return pathlib.Path(pyuvdata.__file__).parent / "data" / "1102865728_small.ms"


# ----------------------------------------------------------------------------- measuring
def _children():
    """{ppid: [pid, ...]} of every process now (from /proc/*/stat)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree_sum(pid, of_one):
    """``of_one(p)`` (bytes, or None when ``p`` is gone) summed over ``pid`` and all its
    descendants."""
    kids = _children()
    todo, total = [pid], 0
    while todo:
        p = todo.pop()
        total += of_one(p) or 0
        todo.extend(kids.get(p, ()))
    return total


def _rss(p):
    try:
        with open(f"/proc/{p}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return None


def _pss(p):
    try:
        with open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _tree_rss(pid):
    """Resident bytes of ``pid`` and all its descendants, summed."""
    return _tree_sum(pid, _rss)


def _tree_pss(pid):
    """Proportional set size of ``pid`` and its descendants, summed: pages shared between
    processes (the ranks' shared libraries: numba's LLVM, scipy, casacore, ~130 MiB per
    rank) counted once, i.e. the memory the job takes from the node."""
    return _tree_sum(pid, _pss)


def run_measured(cmd, env=None, interval=0.1, pss=None):
    """Run ``cmd``; return (CompletedProcess-like dict, wall seconds, peak summed tree RSS).
    ``pss``: a one-element list that receives the peak summed tree PSS (sampled too)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    peak = [0]
    done = threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            if pss is not None:
                pss[0] = max(pss[0], _tree_pss(proc.pid))
            done.wait(interval)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    return {"returncode": proc.returncode, "stdout": out, "stderr": err}, wall, peak[0]


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a).astype(float), np.ravel(b).astype(float))[0, 1])


# ----------------------------------------------------------------------------- the tools
def radimg_config(args, ms, out):
    return {
        "input": {"ms": str(ms)},
        "image": {"npix": args.npix, "cell_arcsec": args.cell_arcsec, "weighting": "natural"},
        "wterm": {"epsilon": args.epsilon},
        "gridder": {"precision": args.precision, "nthreads": args.threads_per_rank},
        "deconvolution": {"algorithm": "none"},
        "output": {"path": str(out), "overwrite": True, "checkpoint": False},
    }


def run_radimg(args, work, ms, env):
    from radimg.io.product import read_product

    out = work / "radimg.h5"
    cfg_path = work / "radimg.yaml"
    cfg_path.write_text(yaml.safe_dump(radimg_config(args, ms, out)))
    sets = sum((["--set", s] for s in args.set), [])
    if args.warm:
        # Untimed: fills numba's cache for every kernel this mode uses (a small image).
        subprocess.run(_mpiexec(args.ranks) + _radimg() + ["run", str(cfg_path), "-q",
                       "--set", "image.npix=256", "--set", f"output.path={work / 'warm.h5'}"]
                       + sets, check=True, capture_output=True, env=env)
    cmd = _mpiexec(args.ranks) + _radimg() + ["run", str(cfg_path)] + sets
    pss = [0]
    res, wall, peak = run_measured(cmd, env, pss=pss)
    if res["returncode"]:
        sys.exit(f"radimg failed ({res['returncode']}):\n{res['stdout']}\n{res['stderr']}")
    prod = read_product(out)
    t = prod["timings"]
    per_rank = t["per_rank"]
    stages = [k for k in t["rank0"] if k != "peak_rss_bytes"]
    plan = json.loads(subprocess.run(
        _radimg() + ["plan", str(cfg_path), "--ranks", str(args.ranks), "--json"] + sets,
        capture_output=True, text=True, check=True, env=env).stdout)
    base = baseline_rss(args.ranks)
    pred = plan["balanced"]["memory_per_rank_bytes"]
    meas = t["peak_rss_bytes_per_rank"]
    cfg_run = yaml.safe_load(str(prod["run"]["config_yaml"]))
    return {
        "command": " ".join(cmd),
        "wall_s": wall,
        "peak_rss_tree_bytes": peak,
        "peak_pss_tree_bytes": pss[0],
        "peak_rss_per_rank_bytes": meas,
        "peak_rss_sum_bytes": int(sum(meas)),
        "stages_rank0_s": {k: t["rank0"][k] for k in stages},
        "stages_max_over_ranks_s": {k: max(r.get(k, 0.0) for r in per_rank) for k in stages},
        "plan_memory_per_rank_bytes": [int(x) for x in pred],
        "baseline_rss_per_rank_bytes": base,
        "plan_over_net_measured": [p / (m - b) if m > b else None
                                   for p, m, b in zip(pred, meas, base, strict=True)],
        "plan_breakdown_rank0": {k: v[0] for k, v in plan["balanced"]["memory_breakdown"].items()},
        "operator": _operator_note(prod, cfg_run),
        "stdout_tail": res["stdout"][-3000:],
        "images": {"dirty": prod["images"]["dirty"], "psf": prod["images"]["psf"]},
    }


def _operator_note(prod, cfg):
    """What the product says about the operator (small inversion geometry when recorded)."""
    lb = prod["run"].get("load_balance_json")
    lb = json.loads(str(lb)) if lb else {}
    keep = ("small_inversion", "n_ranks", "load_max_over_mean", "planes_owned")
    return {"mode": cfg["wterm"]["mode"], **{k: lb[k] for k in keep if k in lb}}


def run_wsclean(args, work, ms):
    exe = shutil.which("wsclean")
    if exe is None:
        return None
    acc = [] if args.wsclean_default_accuracy else ["-wgridder-accuracy", f"{args.epsilon:g}"]
    cmd = [exe, "-use-wgridder", *acc, "-j", str(args.wsclean_threads), "-make-psf",
           "-size", str(args.npix), str(args.npix), "-scale", f"{args.cell_arcsec}asec",
           "-weight", "natural", "-no-update-model-required", *args.wsclean_extra,
           "-name", str(work / "ws"), str(ms)]
    timev = ["/usr/bin/time", "-v"] if os.path.exists("/usr/bin/time") else []
    pss = [0]
    res, wall, peak = run_measured(timev + cmd, pss=pss)
    if res["returncode"]:
        sys.exit(f"wsclean failed ({res['returncode']}):\n{res['stdout']}\n{res['stderr']}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res["stderr"])
    inv = re.search(r"Inversion: ([0-9:.]+)", res["stdout"])
    small = re.search(r"(\d+) x (\d+) .*?(?:small inversion|downsampl)", res["stdout"], re.I)
    from astropy.io import fits

    return {
        "command": " ".join(cmd),
        "wall_s": wall,
        "peak_rss_tree_bytes": peak,
        "peak_pss_tree_bytes": pss[0],
        "peak_rss_time_v_bytes": int(m.group(1)) * 1024 if m else None,
        "inversion_s_as_logged": _hms(inv.group(1)) if inv else None,
        "log_small_inversion": small.group(0) if small else None,
        "stdout_tail": res["stdout"][-3000:],
        "images": {
            "dirty": np.squeeze(fits.getdata(work / "ws-dirty.fits")).astype(np.float64),
            "psf": np.squeeze(fits.getdata(work / "ws-psf.fits")).astype(np.float64),
        },
    }


# ----------------------------------------------------------------------------- report
def table(res):
    r, w = res["radimg"], res.get("wsclean")
    lines = [f"{'':<34}{'radimg':>14}{'wsclean':>14}{'ratio':>9}"]

    def row(name, a, b, fmt):
        ratio = f"{a / b:>9.2f}" if (a is not None and b) else f"{'':>9}"
        bs = fmt.format(b) if b is not None else "-"
        lines.append(f"{name:<34}{fmt.format(a):>14}{bs:>14}{ratio}")

    row("wall time (s)", r["wall_s"], w and w["wall_s"], "{:.2f}")
    row("peak RSS, process tree (MiB)", r["peak_rss_tree_bytes"] / MIB,
        w and w["peak_rss_tree_bytes"] / MIB, "{:.0f}")
    row("peak RSS, sum of ranks (MiB)", r["peak_rss_sum_bytes"] / MIB,
        w and (w["peak_rss_time_v_bytes"] or 0) / MIB, "{:.0f}")
    row("peak PSS, process tree (MiB)", r["peak_pss_tree_bytes"] / MIB,
        w and w["peak_pss_tree_bytes"] / MIB, "{:.0f}")
    lines.append("")
    lines.append(f"radimg stages (s){'rank 0':>23}{'max rank':>14}")
    for k, v in r["stages_rank0_s"].items():
        lines.append(f"  {k:<32}{v:>12.2f}{r['stages_max_over_ranks_s'][k]:>14.2f}")
    if w and w["inversion_s_as_logged"] is not None:
        lines.append(f"wsclean inversion (its log)        {w['inversion_s_as_logged']:>10.2f}")
    lines.append("")
    lines.append("memory per rank (MiB): plan / (peak RSS - idle process) = ratio")
    for i, (p, m, b) in enumerate(zip(r["plan_memory_per_rank_bytes"],
                                      r["peak_rss_per_rank_bytes"],
                                      r["baseline_rss_per_rank_bytes"], strict=True)):
        ratio = r["plan_over_net_measured"][i]
        lines.append(f"  rank {i}: {p / MIB:.0f} / ({m / MIB:.0f} - {b / MIB:.0f}) = "
                     f"{ratio:.2f}" if ratio else f"  rank {i}: {p / MIB:.0f} / -")
    if "agreement" in res:
        a = res["agreement"]
        lines.append("")
        lines.append(f"dirty: correlation {a['dirty_correlation']:.6f}, peak ratio "
                     f"{a['dirty_peak_ratio']:.5f} ({a['dirty_peak_radimg']:.4f} vs "
                     f"{a['dirty_peak_wsclean']:.4f} Jy/beam)")
        lines.append(f"psf:   correlation {a['psf_correlation']:.6f}, peak ratio "
                     f"{a['psf_peak_ratio']:.5f}, max |diff| {a['psf_max_abs_diff']:.2e}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ms", default=None, help="Measurement Set (default: pyuvdata's MWA MS)")
    ap.add_argument("--npix", type=int, default=4096)
    ap.add_argument("--cell-arcsec", type=float, default=30.0)
    ap.add_argument("--ranks", type=int, default=2, help="radimg MPI ranks")
    ap.add_argument("--threads-per-rank", default="auto", help="radimg gridder.nthreads")
    ap.add_argument("--wsclean-threads", type=int, default=2, help="wsclean -j")
    ap.add_argument("--epsilon", type=float, default=1e-5)
    ap.add_argument("--precision", default="single", choices=["single", "double"])
    ap.add_argument("--mode", default=None, help="radimg wterm.mode (default: radimg's)")
    ap.add_argument("--set", action="append", default=[], help="radimg override key=value")
    ap.add_argument("--wsclean-extra", nargs="*", default=[], help="extra wsclean options")
    ap.add_argument("--wsclean-default-accuracy", action="store_true",
                    help="leave WSClean at its default -wgridder-accuracy (1e-4) instead of "
                         "radimg's --epsilon")
    ap.add_argument("--no-wsclean", action="store_true")
    ap.add_argument("--no-warm", dest="warm", action="store_false",
                    help="skip the untimed warm-up run that fills numba's cache")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default="bench_wsclean.json")
    args = ap.parse_args(argv)
    if args.mode:
        args.set.append(f"wterm.mode={args.mode}")
    if args.threads_per_rank != "auto":
        args.threads_per_rank = int(args.threads_per_rank)

    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="bench_wsclean_"))
    work.mkdir(parents=True, exist_ok=True)
    src = pathlib.Path(args.ms) if args.ms else default_ms()
    ms = work / "input.ms"
    if ms.exists():
        shutil.rmtree(ms)
    shutil.copytree(src, ms)  # both tools image a private copy; the original is never opened
    env = bench_env()
    res = {"case": {"ms": str(src), "npix": args.npix, "cell_arcsec": args.cell_arcsec,
                    "ranks": args.ranks, "wsclean_threads": args.wsclean_threads,
                    "epsilon": args.epsilon, "precision": args.precision, "set": args.set,
                    "load_avg_at_start": os.getloadavg()}}
    res["radimg"] = run_radimg(args, work, ms, env)
    res["wsclean"] = None if args.no_wsclean else run_wsclean(args, work, ms)
    res["case"]["load_avg_at_end"] = os.getloadavg()
    if res["wsclean"] is not None:
        ri, wi = res["radimg"]["images"], res["wsclean"]["images"]
        res["agreement"] = {
            "dirty_correlation": _corr(ri["dirty"], wi["dirty"]),
            "dirty_peak_radimg": float(ri["dirty"].max()),
            "dirty_peak_wsclean": float(wi["dirty"].max()),
            "dirty_peak_ratio": float(ri["dirty"].max() / wi["dirty"].max()),
            "psf_correlation": _corr(ri["psf"], wi["psf"]),
            "psf_peak_ratio": float(ri["psf"].max() / wi["psf"].max()),
            "psf_max_abs_diff": float(np.abs(ri["psf"] - wi["psf"]).max()),
        }
        res["ratio_wall_radimg_over_wsclean"] = res["radimg"]["wall_s"] / res["wsclean"]["wall_s"]
    print(table(res))
    for tool in ("radimg", "wsclean"):
        if res.get(tool):
            res[tool].pop("images")
    pathlib.Path(args.out).write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {args.out} (work dir {work})")


if __name__ == "__main__":
    main()
