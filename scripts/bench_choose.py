#!/usr/bin/env python
"""``wterm.mode: auto`` against measurement: predicted vs measured dot + hdot per mode.

For each data set the chooser (radimg/ops/choose.py) costs the three w-term modes on the
geometry each would build (small inversion included, as ``radimg run`` decides it); then
every mode's serial operator is built the same way and timed (one ``hdot`` and one ``dot``
after a warm-up that loads the JIT cache), and its accuracy is measured against a direct
DFT (tests/reference.py ``dft_dirty``) on ~60 pixels (the sources, their neighbours, the
corners, random pixels) for point sources placed out to 90% of the field, and against the
DFT visibilities (``radimg.kernels.dft``) for ``dot``. The table says whether ``auto`` picked
the fastest mode that met epsilon as measured, and the per-mode ratio measured / model
(the ``CALIBRATION`` factors of radimg/ops/choose.py come from it).

Cases
-----
mwa-1024   pyuvdata's real MWA snapshot (1102865728, 72.6 k samples), 1024 x 60"
mwa-4096   the same, 4096 x 30" (a 34 deg field; small inversion)
narrow     simulated MeerKAT, 1.28 GHz, 2 h at 120 s, 4 channels, 1024 x 1.5" (0.43 deg)
demo       configs/demo.yaml's simulated MWA observation (1.9 M samples), 1024 x 72"
mwa-2048   the real MWA snapshot at 2048 x 40" (a 23 deg field)         } not used to fit
vla        pyuvdata's real VLA MS (36 GHz, 87 k samples), 512 x 0.4"    } CALIBRATION

Example (the figures in the issue #13 report)::

    python scripts/bench_choose.py --case all --json /tmp/bench_choose.json
    python scripts/bench_choose.py --field-scan     # wstack-wproject accuracy vs field

One thread, single precision, epsilon 1e-5 unless told otherwise; the cost model is in
seconds of one core, so compare at ``--nthreads 1``.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from radimg.constants import ARCSEC  # noqa: E402
from radimg.constants import C_LIGHT as C  # noqa: E402

CASES = ("mwa-1024", "mwa-4096", "narrow", "demo", "mwa-2048", "vla")


def mwa_ms():
    import importlib.util

    spec = importlib.util.find_spec("pyuvdata")
    if spec is None:
        sys.exit("pyuvdata (test extra) is needed for the real MWA MS")
    return pathlib.Path(spec.origin).parent / "data" / "1102865728_small.ms"


def simulated_ms(name, workdir):
    """Write (once) and return the simulated MS of case ``name``."""
    import yaml

    from radimg.sim.simulate import simulate

    if name == "demo":
        sim = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())["simulate"]
    else:  # narrow: MeerKAT at L band, a ~0.4 deg field
        sim = dict(telescope="meerkat", ra_deg=30.0, dec_deg=-30.0, freq_hz=1.28e9,
                   chan_width_hz=2.0e7, nchan=4, ha_start_h=-1.0, ha_stop_h=1.0,
                   integration_s=120.0, noise_jy=0.0, seed=1,
                   sources=[{"ra_deg": 30.0, "dec_deg": -30.0, "flux_jy": 1.0}])
    path = pathlib.Path(workdir) / f"{name}.ms"
    if not path.exists():
        simulate(sim, str(path), overwrite=True)
    return path


def load_case(name, workdir):
    """(uvw, freq, weight (row, chan) float64, npix, cell_rad) with the samples beyond the
    uv grid dropped as ``radimg run`` drops them."""
    from radimg.io.ms import read_ms
    from radimg.ops.weighting import drop_beyond_grid

    if name.startswith("mwa"):
        path = mwa_ms()
        npix, cell = {"mwa-1024": (1024, 60.0), "mwa-4096": (4096, 30.0),
                      "mwa-2048": (2048, 40.0)}[name]
    elif name == "vla":
        path, npix, cell = mwa_ms().with_name("day2_TDEM0003_10s_norx_1src_1spw.ms"), 512, 0.4
    elif name == "narrow":
        path, npix, cell = simulated_ms("narrow", workdir), 1024, 1.5
    else:
        path, npix, cell = simulated_ms("demo", workdir), 1024, 72.0
    d = read_ms(str(path), precision="double")
    wgt = (d.weight != 0).astype(np.float64)
    cell_rad = cell * ARCSEC
    drop_beyond_grid(d.uvw, d.freq, wgt, npix, npix, cell_rad)
    return d.uvw, d.freq, wgt, npix, cell_rad


def sky(npix, cell_rad):
    """Point sources on pixel centres out to 90% of the half-field: (pixels (src, 2) [iy, ix],
    l, m, flux)."""
    h = npix // 2
    offs = [(0.0, 0.0, 1.0), (0.35, 0.25, 0.6), (-0.9, -0.85, 0.5), (0.9, -0.1, 0.4),
            (-0.2, 0.9, 0.3)]
    pix = np.array([[h + int(round(fy * (h - 2))), h + int(round(fx * (h - 2)))]
                    for fx, fy, _ in offs])
    l = -(pix[:, 1] - h) * cell_rad
    m = (pix[:, 0] - h) * cell_rad
    return pix, l, m, np.array([f for *_, f in offs])


def probe_pixels(npix, src_pix, rng):
    pts = [src_pix]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dx or dy:
                pts.append(src_pix + [dy, dx])
    pts.append(np.array([[0, 0], [0, npix - 1], [npix - 1, 0], [npix - 1, npix - 1]]))
    pts.append(rng.integers(0, npix, (24, 2)))
    p = np.concatenate(pts)
    p = np.clip(p, 0, npix - 1)
    return np.unique(p, axis=0)


def warm_up(mode, kw):
    """Load every JIT function the mode's operator uses (tiny problem)."""
    from radimg.ops.operator import make_operator

    rng = np.random.default_rng(0)
    uvw = rng.uniform(-30, 30, (64, 3))
    op = make_operator(uvw, [C], 64, 64, 0.01, **kw)
    op.dot(op.hdot(np.ones((64, 1), np.complex64)))


class KernelClock:
    """Seconds spent in the per-sample (kernel) functions of the none/wstack operator, by
    wrapping them in radimg.kernels.gridder (the operator calls them through the module)."""

    NAMES = ("grid_plane_prepared", "degrid_plane_prepared", "prepare_samples",
             "finish_samples")

    def __init__(self):
        from radimg.kernels import gridder

        self.mod, self.seconds, self.orig = gridder, 0.0, {}
        for n in self.NAMES:
            f = getattr(gridder, n)
            self.orig[n] = f

            def wrapped(*a, _f=f, **k):
                t0 = time.perf_counter()
                try:
                    return _f(*a, **k)
                finally:
                    self.seconds += time.perf_counter() - t0

            setattr(gridder, n, wrapped)

    def close(self):
        for n, f in self.orig.items():
            setattr(self.mod, n, f)


def kernel_seconds(op, clock):
    """Kernel (per-sample) seconds of the last applications: wproject's own timings, or the
    clock for none/wstack."""
    inner = getattr(op, "op", op)
    t = getattr(inner, "timings", None)
    if t is not None and "grid" in t:
        return t["grid"] + t["degrid"]
    return clock.seconds


def run_case(name, args):
    from reference import dft_dirty

    from radimg.kernels.dft import dft_predict
    from radimg.ops.choose import CALIBRATION, WtermChoice, choice_table, choose_wterm
    from radimg.ops.operator import make_operator
    from radimg.ops.resample import SmallInversion, small_inversion
    from radimg.parallel.choose import summarize

    t0 = time.perf_counter()
    uvw, freq, wgt, npix, cell = load_case(name, args.workdir)
    valid = wgt != 0
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    summ = summarize(uvw, freq, valid, npix, npix, cell, cell)
    choice = choose_wterm(summ, npix, npix, cell, cell, args.epsilon, precision=args.precision)
    t_choose = time.perf_counter() - t0
    print(f"\n== {name}: {uvw.shape[0]} rows x {freq.size} chan, {int(valid.sum())} samples, "
          f"{npix} x {cell / ARCSEC:g}\", |w| <= {summ.wmax:.4g} wavelengths; load "
          f"{t_load:.1f} s, choice {t_choose:.2f} s", flush=True)
    print("\n".join(choice_table(choice)))
    print(choice.reason, flush=True)

    pix, l, m, flux = sky(npix, cell)
    cdt = np.complex64 if args.precision == "single" else np.complex128
    vis_true = dft_predict(uvw, freq, l, m, flux[:, None] * np.ones(freq.size),
                           nthreads=args.nthreads)
    vis_true[~valid] = 0
    vis = vis_true.astype(cdt)
    # the operator's forward model is the simulator's (no 1 / n, docs/internals.md)
    vis_fwd = vis_true
    model = np.zeros((npix, npix))
    model[pix[:, 0], pix[:, 1]] = flux
    probe = probe_pixels(npix, pix, np.random.default_rng(1))
    t0 = time.perf_counter()
    ref = dft_dirty(uvw, freq, vis_true, wgt, npix, npix, cell, pixels=probe, chunk=16)
    t_dft = time.perf_counter() - t0
    peak = np.abs(ref).max()
    vpeak = np.abs(vis_fwd[valid]).max()
    print(f"   DFT oracle on {probe.shape[0]} pixels: {t_dft:.1f} s", flush=True)

    rows = []
    for cand in choice.candidates:
        if cand.mode not in args.modes:
            continue
        kw = WtermChoice(cand.mode, choice.candidates, args.epsilon).operator_kwargs()
        opkw = dict(epsilon=args.epsilon, precision=args.precision, nthreads=args.nthreads,
                    **kw)
        row = {"case": name, "mode": cand.mode, "chosen": cand.mode == choice.mode,
               "predicted_s": cand.predicted_s, "model_planes_s": cand.model_planes_s,
               "model_kernels_s": cand.model_kernels_s,
               "resample_model_s": cand.resample_s, "meets_epsilon_predicted":
               cand.meets_epsilon, "error_bound": cand.error_bound,
               "operator_kwargs": {k: v for k, v in kw.items()}}
        if not math.isfinite(cand.predicted_s):
            row["skipped"] = cand.note
            rows.append(row)
            continue
        warm_up(cand.mode, dict(opkw, nstacks="auto"))
        t0 = time.perf_counter()
        op = small_inversion(
            lambda nx, ny, c, opkw=opkw: make_operator(uvw, freq, nx, ny, c,
                                                       weight_mask=valid, **opkw),
            uvw, freq, valid, npix, npix, cell, epsilon=args.epsilon, mode=cand.mode,
            nthreads=args.nthreads)
        t_setup = time.perf_counter() - t0
        inner = getattr(op, "op", op)
        rdt = np.float32 if cdt == np.complex64 else np.float64
        best = None
        for _ in range(args.repeat):  # the fastest of the repeats (a shared machine)
            clock = KernelClock()
            if hasattr(inner, "timings"):
                inner.timings.update(grid=0.0, degrid=0.0)
            t0 = time.perf_counter()
            img = np.asarray(op.hdot(vis, wgt.astype(rdt)), np.float64)
            t_hdot = time.perf_counter() - t0
            t0 = time.perf_counter()
            v = op.dot(model.astype(rdt))
            t_dot = time.perf_counter() - t0
            t_kern = kernel_seconds(op, clock)
            clock.close()
            if best is None or t_hdot + t_dot < best[0] + best[1]:
                best = (t_hdot, t_dot, t_kern)
        t_hdot, t_dot, t_kern = best
        t_res = 0.0
        if isinstance(op, SmallInversion):
            g = op.small_geometry
            c0 = np.zeros((g.nc_y, g.nc_x), np.float32)
            f0 = np.zeros((npix, npix), np.float32)
            t0 = time.perf_counter()
            op.to_fine(c0)
            op.to_coarse(f0)
            t_res = time.perf_counter() - t0
        err_h = float(np.abs(img[probe[:, 0], probe[:, 1]] - ref).max() / peak)
        err_d = float(np.abs(np.asarray(v)[valid] - vis_fwd[valid]).max() / vpeak)
        meas = t_hdot + t_dot
        t_planes = max(meas - t_res - t_kern, 0.0)
        row.update(setup_s=t_setup, hdot_s=t_hdot, dot_s=t_dot, measured_s=meas,
                   resample_s=t_res, kernels_s=t_kern, planes_s=t_planes,
                   hdot_error=err_h, dot_error=err_d,
                   meets_epsilon_measured=max(err_h, err_d) <= args.epsilon,
                   ratio_planes=t_planes / cand.model_planes_s,
                   ratio_kernels=t_kern / cand.model_kernels_s if cand.model_kernels_s else None,
                   ratio_resample=t_res / cand.resample_s if cand.resample_s else None)
        cal = CALIBRATION[cand.mode]
        print(f"   {cand.mode:16s} set-up {t_setup:6.2f} s  hdot {t_hdot:7.2f} s  dot "
              f"{t_dot:7.2f} s = planes {t_planes:.2f} + kernels {t_kern:.2f} + resample "
              f"{t_res:.2f}; predicted {cand.predicted_s:7.2f} s; measured/model: planes "
              f"{row['ratio_planes']:.3f} (in use {cal['planes']:g}), kernels "
              f"{row['ratio_kernels'] or 0:.3f} (in use {cal['kernels']:g}); error hdot "
              f"{err_h:.2e} dot {err_d:.2e}", flush=True)
        rows.append(row)
        del op
    ok = [r for r in rows if r.get("meets_epsilon_measured")]
    fastest = min(ok, key=lambda r: r["measured_s"])["mode"] if ok else None
    summary = {"case": name, "npix": npix, "cell_arcsec": cell / ARCSEC,
               "samples": int(valid.sum()), "wmax": summ.wmax, "chosen": choice.mode,
               "fastest_meeting_epsilon": fastest,
               "auto_picked_fastest": fastest == choice.mode if fastest else None,
               "choice_seconds": t_choose, "reason": choice.reason,
               "choice": choice.describe()}
    print(f"   auto chose {choice.mode}; fastest that met epsilon as measured: {fastest}",
          flush=True)
    return summary, rows


def field_scan(args):
    """wstack-wproject's accuracy against field width (radimg.ops.choose.WPROJECT_MAX_NM1):
    the real MWA snapshot at 1024 px and cells from 60" to 120" (17-34 deg), double
    precision, the ``dot`` of a source at the centre and one near the corner against the
    DFT (max error / max |V|), next to wstack's."""
    from radimg.kernels.dft import dft_predict
    from radimg.ops.geometry import Field
    from radimg.ops.operator import make_operator
    from radimg.ops.weighting import drop_beyond_grid

    uvw, freq, _, _, _ = load_case("mwa-1024", args.workdir)
    npix, out = 1024, []
    print("\n| field (deg) | 1 - n (corner) | wstack-wproject dot error | wstack dot error |")
    print("|---|---|---|---|")
    for cell_as in (60.0, 72.0, 88.0, 98.0, 108.0, 120.0):
        cell = cell_as * ARCSEC
        wgt = np.ones((uvw.shape[0], freq.size))
        drop_beyond_grid(uvw, freq, wgt, npix, npix, cell)
        valid = wgt != 0
        pix, l, m, _ = sky(npix, cell)
        errs = {}
        for mode in ("wstack-wproject", "wstack"):
            op = make_operator(uvw, freq, npix, npix, cell, weight_mask=valid,
                               epsilon=args.epsilon, mode=mode, precision="double",
                               nthreads=args.nthreads)
            e = 0.0
            for s in (0, 2):  # centre, near the corner
                img = np.zeros((npix, npix))
                img[pix[s, 0], pix[s, 1]] = 1.0
                ref = dft_predict(uvw, freq, l[s:s + 1], m[s:s + 1], np.ones((1, freq.size)))
                e = max(e, float(np.abs(op.dot(img) - ref)[valid].max()
                                 / np.abs(ref[valid]).max()))
            errs[mode] = e
        fov = npix * cell_as / 3600.0
        nm1 = Field(npix, npix, cell, cell).one_minus_n
        print(f"| {fov:.1f} | {nm1:.3f} | {errs['wstack-wproject']:.2e} | "
              f"{errs['wstack']:.2e} |", flush=True)
        out.append({"fov_deg": fov, "one_minus_n": nm1, **errs})
    return out


def fit_calibration(runs):
    """Per-mode (planes, kernels) factors of radimg.ops.choose.CALIBRATION: non-negative
    least squares of the measured time (relative errors) over the cases of ``runs`` (lists
    of rows; the fastest of the runs is kept per case and mode). wstack-wproject rows that
    missed epsilon are left out (the chooser never picks it there)."""
    from scipy.optimize import nnls

    best = {}
    for rows in runs:
        for r in rows:
            if "measured_s" not in r:
                continue
            k = (r["case"], r["mode"])
            if k not in best or r["measured_s"] < best[k]["measured_s"]:
                best[k] = r
    out = {}
    for mode in ("none", "wstack", "wstack-wproject"):
        rr = [r for r in best.values() if r["mode"] == mode
              and (mode != "wstack-wproject" or r["meets_epsilon_measured"])]
        if len(rr) < 2:
            continue
        a = np.array([[r["model_planes_s"], r["model_kernels_s"]] for r in rr])
        m = np.array([r["measured_s"] - r["resample_s"] for r in rr])
        t = np.array([r["measured_s"] for r in rr])
        x, _ = nnls(a / t[:, None], m / t)
        out[mode] = (float(x[0]), float(x[1]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="all", help=f"all or a comma list of {', '.join(CASES)}")
    ap.add_argument("--modes", default="none,wstack,wstack-wproject")
    ap.add_argument("--epsilon", type=float, default=1e-5)
    ap.add_argument("--precision", default="single", choices=("single", "double"))
    ap.add_argument("--nthreads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2,
                    help="time hdot + dot this many times and keep the fastest")
    ap.add_argument("--workdir", default="/tmp/radimg_bench_choose",
                    help="where the simulated MSs are written (once)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--field-scan", action="store_true",
                    help="only measure wstack-wproject's accuracy against field width")
    args = ap.parse_args(argv)
    args.modes = args.modes.split(",")
    pathlib.Path(args.workdir).mkdir(parents=True, exist_ok=True)
    cases = CASES if args.case == "all" else args.case.split(",")
    import numba

    numba.set_num_threads(max(1, min(args.nthreads, numba.config.NUMBA_NUM_THREADS)))
    if args.field_scan:
        scan = field_scan(args)
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps({"field_scan": scan}, indent=1))
        return
    summaries, rows = [], []
    for name in cases:
        s, r = run_case(name, args)
        summaries.append(s)
        rows += r
    print("\n| case | mode | predicted s | measured s (hdot + dot) | measured/predicted | "
          "error (hdot, dot) | chosen |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "measured_s" not in r:
            print(f"| {r['case']} | {r['mode']} | - | - | - | {r.get('skipped', '')} | |")
            continue
        print(f"| {r['case']} | {r['mode']} | {r['predicted_s']:.3g} | {r['measured_s']:.3g} "
              f"({r['hdot_s']:.3g} + {r['dot_s']:.3g}) | "
              f"{r['measured_s'] / r['predicted_s']:.2f} | {r['hdot_error']:.1e}, "
              f"{r['dot_error']:.1e} | {'**auto**' if r['chosen'] else ''} |")
    for s in summaries:
        print(f"{s['case']}: auto -> {s['chosen']}; fastest meeting epsilon (measured) -> "
              f"{s['fastest_meeting_epsilon']}")
    ratios = {}
    for r in rows:
        for part in ("planes", "kernels", "resample"):
            if r.get(f"ratio_{part}"):
                ratios.setdefault((r["mode"], part), []).append(r[f"ratio_{part}"])
    print("measured / model (median over cases; radimg.ops.choose.CALIBRATION, "
          "COST_RESAMPLE):")
    for (mode, part), v in sorted(ratios.items()):
        print(f"  {mode:16s} {part:9s} median {np.median(v):.3f}  "
              f"[{', '.join(f'{x:.3f}' for x in v)}]")
    fit = fit_calibration([rows])
    print("CALIBRATION fitted to this run (least squares of the total time, relative; "
          "wstack-wproject only where it met epsilon):")
    for mode, (a, b) in fit.items():
        print(f'    "{mode}": {{"planes": {a:.2f}, "kernels": {b:.2f}}},')
    if args.json:
        out = {"args": vars(args), "cases": summaries, "rows": rows, "fit": fit}
        pathlib.Path(args.json).write_text(json.dumps(out, indent=1, default=float))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
