#!/usr/bin/env python
"""Dirty-image throughput and accuracy: radimg's operator next to ducc0.wgridder (vis2dirty).

Both run on the same data in the same process with the same epsilon and thread count; each
result is checked against a direct DFT of the measurement equation on ~50 pixels (sources,
corners, random), and the table reports time, samples/s/core and max error / peak.

Cases
-----
a  paper-like: 10 M samples, 4096^2, ~10 deg field, Gaussian uv, w ~ N(0, 200) clipped to
   +-600 wavelengths.
b  MWA-like snapshot: 128 tiles within 1.5 km (pyuvdata's MWA layout, or random), 10
   channels at 167-198 MHz, 20 deg from zenith, 4096^2 at 0.5' (~34 deg).
c  narrow field: 2 M samples, 2048^2 at 2" (~1.1 deg), |w| <= 50 wavelengths.

``--scale F`` multiplies sample counts by F and image sizes by sqrt(F) (same field of view).

Example: ``python scripts/bench_operator.py --case all --scale 0.05 --nthreads 2 --json out.json``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time

import numpy as np

from radimg.constants import ARCMIN
from radimg.constants import C_LIGHT as C


def _dft_numba():
    import numba

    @numba.njit(parallel=True, cache=True)
    def dft(u, v, w, vis, l, m, n):
        out = np.zeros(l.size)
        for k in numba.prange(l.size):
            acc = 0.0
            for i in range(u.size):
                ph = -2.0 * np.pi * (u[i] * l[k] + v[i] * m[k] + w[i] * (n[k] - 1.0))
                acc += vis[i].real * math.cos(ph) - vis[i].imag * math.sin(ph)
            out[k] = acc  # no 1 / n (docs/internals.md)
        return out

    return dft


def pixel_lm(npix_x, npix_y, cell, pix):
    l = -(pix[:, 1] - npix_x // 2) * cell
    m = (pix[:, 0] - npix_y // 2) * cell
    return l, m, np.sqrt(1 - l * l - m * m)


def point_sources_vis(uvw, freq, lms, fluxes, dtype):
    f = freq / C
    vis = np.zeros((uvw.shape[0], freq.size), dtype=np.complex128)
    for (l0, m0), s in zip(lms, fluxes):
        n0 = math.sqrt(1 - l0 * l0 - m0 * m0)
        ph = (uvw[:, 0:1] * l0 + uvw[:, 1:2] * m0 + uvw[:, 2:3] * (n0 - 1)) * f[None, :]
        vis += s * np.exp(2j * np.pi * ph)
    return vis.astype(dtype)


def make_case(case, scale, rng):
    sq = math.sqrt(scale)
    if case == "a":
        npix = 2 * max(32, int(round(4096 * sq / 2)))
        cell = np.deg2rad(10.0) / npix
        nchan = 4
        nrow = max(1000, int(10_000_000 * scale) // nchan)
        freq = np.linspace(1.0e9, 1.1e9, nchan)
        lam = C / freq.max()
        uvnyq = 0.5 / cell
        uv = np.clip(rng.normal(0, 0.2 * uvnyq, (nrow, 2)), -0.9 * uvnyq, 0.9 * uvnyq)
        w = np.clip(rng.normal(0, 200.0, nrow), -600, 600)
        uvw = np.column_stack([uv, w]) * lam
        desc = f"paper-like {nrow * nchan / 1e6:.2f} M samples, {npix}^2, 10 deg, |w|<=600"
    elif case == "b":
        npix = 2 * max(32, int(round(4096 * sq / 2)))
        cell = 0.5 * ARCMIN * 4096 / npix
        nchan = 10
        freq = np.linspace(167e6, 198e6, nchan)
        pos = None
        try:
            import pyuvdata

            csv = pathlib.Path(pyuvdata.__file__).parent / "data" / "mwa_ant_pos.csv"
            xyz = np.loadtxt(csv, delimiter=",", skiprows=1, usecols=(2, 3, 4))
            xyz = xyz - np.median(xyz, axis=0)
            near = xyz[np.hypot(xyz[:, 0], xyz[:, 1]) < 1500.0]
            pos = near[rng.choice(len(near), min(128, len(near)), replace=False)]
        except Exception:
            pass
        if pos is None:  # random 128 tiles within 1.5 km, a few metres of height scatter
            r = 1500.0 * np.sqrt(rng.uniform(size=128))
            t = rng.uniform(0, 2 * np.pi, 128)
            pos = np.column_stack([r * np.cos(t), r * np.sin(t), rng.normal(0, 3, 128)])
        i, j = np.triu_indices(len(pos), 1)
        b = pos[j] - pos[i]  # ENU baselines
        az, el = np.deg2rad(30.0), np.deg2rad(70.0)  # 20 deg from zenith
        s = np.array([np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)])
        eu = np.array([np.cos(az), -np.sin(az), 0.0])
        ev = np.cross(s, eu)
        uvw = np.column_stack([b @ eu, b @ ev, b @ s])
        keep = np.abs(uvw[:, :2]).max(axis=1) * freq.max() / C < 0.45 / cell
        uvw = uvw[keep]
        nrow = uvw.shape[0]
        desc = (f"MWA-like snapshot {nrow} bl x {nchan} ch, {npix}^2 at "
                f"{cell / ARCMIN:.2f}' ({np.rad2deg(cell * npix):.0f} deg)")
    elif case == "c":
        npix = 2 * max(32, int(round(2048 * sq / 2)))
        cell = np.deg2rad(2.0 / 3600) * 2048 / npix
        nchan = 4
        nrow = max(1000, int(2_000_000 * scale) // nchan)
        freq = np.linspace(1.4e9, 1.5e9, nchan)
        lam = C / freq.max()
        uvnyq = 0.5 / cell
        uv = rng.uniform(-0.8 * uvnyq, 0.8 * uvnyq, (nrow, 2))
        w = rng.uniform(-50, 50, nrow)
        uvw = np.column_stack([uv, w]) * lam
        desc = f"narrow field {nrow * nchan / 1e6:.2f} M samples, {npix}^2, 2\" cells"
    else:
        raise ValueError(case)
    return dict(uvw=uvw, freq=freq, npix=npix, cell=float(cell), desc=desc)


def _build(uvw, freq, npix, cell, mode, args, ov):
    """radimg's operator for the case: bare, or with ``--small-inversion`` through the
    layer ``radimg run`` puts around it (which returns the bare operator when the data
    need the full grid)."""
    from radimg.ops.operator import make_operator
    from radimg.ops.resample import small_inversion

    def build(nx, ny, c):
        return make_operator(uvw, freq, nx, ny, c, mode=mode, epsilon=args.epsilon,
                             nthreads=args.nthreads, precision=args.precision,
                             oversampling=ov)

    if not args.small_inversion:
        return build(npix, npix, cell)
    return small_inversion(build, uvw, freq, None, npix, npix, cell, epsilon=args.epsilon,
                           mode=mode, nthreads=args.nthreads)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="all", help="a, b, c or all (comma list allowed)")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--mode", default="wstack", help="radimg mode(s), comma list")
    ap.add_argument("--epsilon", type=float, default=1e-5)
    ap.add_argument("--nthreads", type=int, default=1)
    ap.add_argument("--oversampling", default="auto", help='"auto" or a factor such as 2.0')
    ap.add_argument("--precision", default="double", choices=["single", "double"])
    ap.add_argument("--npix-check", type=int, default=50)
    ap.add_argument("--no-ducc", action="store_true")
    ap.add_argument("--small-inversion", action="store_true",
                    help="radimg through its small-inversion layer, as `radimg run` images by "
                         "default (radimg.ops.resample): the operator grids the coarsest "
                         "image the data allow and resamples to the requested cells")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from radimg.cli import _small_pages
    from radimg.ops.operator import make_operator

    _small_pages()  # as `radimg run` does (numpy's huge-page madvise off)

    cases = "abc" if args.case == "all" else args.case.replace(",", "")
    modes = args.mode.split(",")
    dft = _dft_numba()
    cdt = np.complex64 if args.precision == "single" else np.complex128
    ov = args.oversampling if args.oversampling == "auto" else float(args.oversampling)
    # Compile the numba kernels before anything is timed.
    wrng = np.random.default_rng(0)
    wuvw = wrng.uniform(-50, 50, (200, 3))
    for mode in modes:
        wop = make_operator(wuvw, np.array([1e8]), 64, 64, 1e-3, mode=mode,
                            epsilon=args.epsilon, precision=args.precision, oversampling=ov)
        wop.dot(wop.hdot(np.ones((200, 1), cdt)))
    results = []
    for case in cases:
        rng = np.random.default_rng(1234 + ord(case))
        d = make_case(case, args.scale, rng)
        uvw, freq, npix, cell = d["uvw"], d["freq"], d["npix"], d["cell"]
        nsamp = uvw.shape[0] * freq.size
        # Sky: sources at the centre and across the field (wide-field w effects show there).
        src_pix = np.array([[npix // 2, npix // 2], [npix // 5, npix // 4],
                            [npix - npix // 8, npix // 3], [npix // 3, npix - npix // 10]])
        lms = [tuple(x[:2]) for x in np.column_stack(pixel_lm(npix, npix, cell, src_pix))]
        vis = point_sources_vis(uvw, freq, lms, [1.0, 0.5, 0.7, 0.3], cdt)
        vis += (0.1 * (rng.normal(size=vis.shape) + 1j * rng.normal(size=vis.shape))).astype(cdt)
        wgt = np.ones(vis.shape, dtype=np.float32 if cdt == np.complex64 else np.float64)
        check = np.concatenate([src_pix, [[0, 0], [npix - 1, npix - 1], [0, npix - 1]],
                                rng.integers(1, npix, (max(0, args.npix_check - 7), 2))])
        f = freq / C
        u = (uvw[:, 0:1] * f).ravel()
        v = (uvw[:, 1:2] * f).ravel()
        w = (uvw[:, 2:3] * f).ravel()
        l, m, n = pixel_lm(npix, npix, cell, check)
        t0 = time.perf_counter()
        ref = dft(u, v, w, vis.astype(np.complex128).ravel(), l, m, n)
        t_dft = time.perf_counter() - t0
        peak = np.abs(ref).max()
        print(f"\ncase {case}: {d['desc']}  (|w| max {np.abs(w).max():.0f}; DFT check "
              f"{len(check)} px in {t_dft:.1f} s)", flush=True)
        row = dict(case=case, desc=d["desc"], nsamples=int(nsamp), npix=npix, cell_rad=cell,
                   nthreads=args.nthreads, epsilon=args.epsilon, precision=args.precision,
                   runs=[])
        for mode in modes:
            t0 = time.perf_counter()
            op = _build(uvw, freq, npix, cell, mode, args, ov)
            t_setup = time.perf_counter() - t0
            t0 = time.perf_counter()
            dirty = op.hdot(vis, wgt)
            t_run = time.perf_counter() - t0
            err = np.abs(dirty[check[:, 0], check[:, 1]] - ref).max() / peak
            st = op.stats
            small = getattr(op, "small_geometry", None)
            code = f"radimg-{mode}" + ("-small" if args.small_inversion else "")
            row["runs"].append(dict(code=code, setup_s=t_setup, time_s=t_run,
                                    small_inversion=None if small is None else small.describe(),
                                    samples_per_s_core=nsamp / (t_setup + t_run) / args.nthreads,
                                    err_over_peak=float(err), nplanes=st["nplanes"],
                                    support=st["support"], padded=list(st["padded_grid"]),
                                    oversampling=st["oversampling"],
                                    support_w=st.get("support_w"),
                                    oversampling_w=st.get("oversampling_w"),
                                    w_kernel=st.get("w_kernel"),
                                    fft=st.get("fft")))
        if not args.no_ducc:
            from ducc0.wgridder.experimental import vis2dirty

            t0 = time.perf_counter()
            # divide_by_n=False: radimg's (and WSClean's, CASA's) flux convention, which the
            # DFT reference follows; ms2dirty always divides by n (errors ~1-n at the corners)
            dd = vis2dirty(uvw=uvw, freq=freq, vis=vis, wgt=wgt, npix_x=npix, npix_y=npix,
                           pixsize_x=cell, pixsize_y=cell, epsilon=args.epsilon,
                           do_wgridding=True, divide_by_n=False, nthreads=args.nthreads)
            t_run = time.perf_counter() - t0
            # ducc0's axes: first toward west, second toward south (DESIGN.md).
            got = dd[check[:, 1], (npix - check[:, 0]) % npix]
            ok = check[:, 0] > 0
            err = np.abs(got[ok] - ref[ok]).max() / peak
            row["runs"].append(dict(code="ducc0-vis2dirty", setup_s=0.0, time_s=t_run,
                                    samples_per_s_core=nsamp / t_run / args.nthreads,
                                    err_over_peak=float(err)))
        results.append(row)
        hdr = f"{'code':<18}{'setup s':>9}{'run s':>9}{'Msamp/s/core':>14}{'err/peak':>11}  info"
        print(hdr)
        for r in row["runs"]:
            info = (f"planes={r['nplanes']} W={r['support']} grid={r['padded']} "
                    f"sigma={r['oversampling']} Ww={r['support_w']} "
                    f"sigma_w={r['oversampling_w']} w_kernel={r.get('w_kernel')} "
                    f"fft={r['fft']}"
                    if "nplanes" in r else "")
            print(f"{r['code']:<18}{r['setup_s']:>9.2f}{r['time_s']:>9.2f}"
                  f"{r['samples_per_s_core'] / 1e6:>14.3f}{r['err_over_peak']:>11.2e}  {info}",
                  flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(dict(argv=sys.argv[1:], scale=args.scale, results=results), fh, indent=1)
    return results


if __name__ == "__main__":
    main()
