"""Planned vs measured peak memory per rank (issue #4): `radimg plan --json` against the
peak RSS that `mpiexec -n N radimg run` records per rank in its product (/run timings_json,
radimg/progress.py), minus the baseline RSS of an idle radimg process.

    python scripts/bench_memory.py                 # demo config, 1 and 2 ranks, both modes
    python scripts/bench_memory.py --large         # plus a larger simulated observation
    python scripts/bench_memory.py --out bench_memory.json

The baseline is the peak RSS of `python -c "import radimg.pipeline, mpi4py.MPI, ..."`
under the same mpiexec (interpreter, numpy/scipy/numba/casacore/h5py/MPI); the model does
not count it. The measured figure also holds numba's compiled code and the MPI library's
buffers, which the model leaves out. Cases share one simulated MS per observation (made by
a warm-up run first, so the simulate stage never sets the peak).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "demo.yaml")
BASELINE_CODE = (
    "import resource, radimg.pipeline, radimg.parallel.operator, radimg.ops.wproject, "
    "radimg.io.ms, mpi4py.MPI, h5py, casacore.tables, numba, scipy.fft; "
    "print(f'RSS {mpi4py.MPI.COMM_WORLD.rank} "
    "{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}', flush=True)"
)


def bench_env(**extra):
    """The environment radimg runs in for a timed benchmark: numba's cache in the repo (or
    ``$NUMBA_CACHE_DIR``) and Python's bytecode cache allowed (an installed package has its
    ``.pyc`` files; a ``PYTHONDONTWRITEBYTECODE`` left in the shell would make every rank
    compile radimg's sources at every start, ~0.05-0.2 s that no user pays)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get(
        "NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache")), **extra}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _radimg():
    exe = os.path.join(os.path.dirname(sys.executable), "radimg")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "radimg.cli"]


def _mpiexec(n):
    exe = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return [exe if os.path.exists(exe) else "mpiexec", "-n", str(n)]


def baseline_rss(n):
    out = subprocess.run(_mpiexec(n) + [sys.executable, "-c", BASELINE_CODE],
                         capture_output=True, text=True, check=True).stdout
    got = {int(r): int(b) for r, b in re.findall(r"RSS (\d+) (\d+)", out)}
    if sorted(got) != list(range(n)):
        raise RuntimeError(f"baseline: expected {n} ranks, got {out!r}")
    return [got[r] for r in range(n)]


def run_case(name, overrides, n, workdir):
    sets = sum((["--set", o] for o in overrides), [])
    plan = json.loads(subprocess.run(
        _radimg() + ["plan", CONFIG, "--ranks", str(n), "--json"] + sets,
        capture_output=True, text=True, check=True).stdout)
    out = os.path.join(workdir, f"{name}-{n}.h5")
    subprocess.run(_mpiexec(n) + _radimg() + ["run", CONFIG, "-q", "--set",
                   f"output.path={out}"] + sets, check=True, capture_output=True)
    import h5py

    with h5py.File(out, "r") as f:
        t = json.loads(f["run"].attrs["timings_json"])
    return plan, t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", action="store_true", help="add a larger simulated case")
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--modes", default="wstack,wstack-wproject")
    ap.add_argument("--out", default="bench_memory.json")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="radimg-bench-mem-")
    obs = {"demo": [f"input.ms={workdir}/demo.ms"]}
    if args.large:
        # 2x the demo's samples (8 channels), 4x its pixels over the same field
        obs["large"] = [f"input.ms={workdir}/large.ms", "simulate.nchan=8",
                        "image.npix=2048", "image.cell_arcsec=36"]
    ranks = [int(x) for x in args.ranks.split(",")]
    modes = args.modes.split(",")
    base = {n: baseline_rss(n) for n in ranks}
    rows = []
    for oname, ov in obs.items():
        # warm-up: writes the MS (and its stamp) and fills the numba cache
        subprocess.run(_radimg() + ["run", CONFIG, "-q", "--set", "image.npix=64", "--set",
                                    f"output.path={workdir}/warm.h5"] + sum(
            (["--set", o] for o in ov if not o.startswith("image.")), []),
            check=True, capture_output=True)
        for mode in modes:
            for n in ranks:
                plan, t = run_case(f"{oname}-{mode}", ov + [f"wterm.mode={mode}"], n, workdir)
                pred = plan["balanced"]["memory_per_rank_bytes"]
                meas = t["peak_rss_bytes_per_rank"]
                for r in range(n):
                    net = meas[r] - base[n][r]
                    rows.append({
                        "obs": oname, "mode": mode, "ranks": n, "rank": r,
                        "n_samples": plan["n_samples"],
                        "predicted_bytes": int(pred[r]), "measured_peak_rss_bytes": int(meas[r]),
                        "baseline_rss_bytes": int(base[n][r]), "measured_net_bytes": int(net),
                        "ratio_pred_over_net": pred[r] / net if net > 0 else None,
                        "breakdown": {k: v[r] for k, v in
                                      plan["balanced"]["memory_breakdown"].items()},
                        "stage_peak_rss_bytes": t["stage_peak_rss_bytes_per_rank"][r],
                    })
    mib = 2.0**20
    print(f"{'obs':<6} {'mode':<16} {'n':>2} {'rank':>4} {'plan MiB':>9} {'peak RSS':>9} "
          f"{'baseline':>9} {'net MiB':>8} {'plan/net':>8}")
    for x in rows:
        print(f"{x['obs']:<6} {x['mode']:<16} {x['ranks']:>2} {x['rank']:>4} "
              f"{x['predicted_bytes'] / mib:>9.0f} {x['measured_peak_rss_bytes'] / mib:>9.0f} "
              f"{x['baseline_rss_bytes'] / mib:>9.0f} {x['measured_net_bytes'] / mib:>8.0f} "
              f"{x['ratio_pred_over_net']:>8.2f}")
    ratios = np.array([x["ratio_pred_over_net"] for x in rows], dtype=float)
    summary = {"min_ratio": float(ratios.min()), "max_ratio": float(ratios.max()),
               "within_30_percent": bool(np.all(np.abs(ratios - 1.0) <= 0.3))}
    print(f"plan / (peak RSS - baseline): {summary['min_ratio']:.2f} .. "
          f"{summary['max_ratio']:.2f}; all within +-30%: {summary['within_30_percent']}")
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "summary": summary, "workdir": workdir}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
