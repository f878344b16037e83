#!/usr/bin/env python
"""Cleaned image, radimg vs WSClean, on the same simulated MS.

Both image the same MS with matched size, cell, natural weighting, gain, mgain, niter and an
absolute threshold (WSClean ``-threshold``; radimg ``threshold_jy``, auto threshold off), and
Hogbom CLEAN with Cotton-Schwab major cycles. Reported: wall time of each (one process / two
threads each), and agreement of the restored images: Pearson correlation, peak-flux ratio,
and the positions (parabolic peak fit) and peak fluxes of every simulated source.

    .venv/bin/python scripts/bench_deconv.py --npix 512 --out bench_deconv.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent


def _peak_fit(img, x, y, r=3):
    """Sub-pixel position of the local maximum near (x, y) by a 1-D parabola on each axis."""
    box = img[y - r : y + r + 1, x - r : x + r + 1]
    jy, jx = np.unravel_index(np.argmax(box), box.shape)
    py, px = y - r + jy, x - r + jx

    def para(a, b, c):
        d = a - 2 * b + c
        return 0.0 if d == 0 else 0.5 * (a - c) / d

    dx = para(img[py, px - 1], img[py, px], img[py, px + 1])
    dy = para(img[py - 1, px], img[py, px], img[py + 1, px])
    return px + dx, py + dy, float(img[py, px])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npix", type=int, default=512)
    ap.add_argument("--cell-arcsec", type=float, default=60.0)
    ap.add_argument("--niter", type=int, default=2000)
    ap.add_argument("--threshold-jy", type=float, default=0.01)
    ap.add_argument("--noise-jy", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default="bench_deconv.json")
    args = ap.parse_args(argv)

    from radimg.io.product import image_wcs, make_wcs_info, read_product

    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="bench_deconv_"))
    work.mkdir(parents=True, exist_ok=True)
    n, cell = args.npix, args.cell_arcsec
    wcs = image_wcs(make_wcs_info(n, n, np.radians(cell / 3600), (0.0, np.radians(-27.0)), 1.5e8))
    c = n // 2
    offs = [(0, 0, 2.0), (n // 8, -n // 6, 1.0), (-n // 5, n // 7, 0.5), (n // 4, n // 4, 0.8)]
    pix = [(c + dx, c + dy, f) for dx, dy, f in offs]
    sources = []
    for x, y, f in pix:
        s = wcs.pixel_to_world(x, y)
        sources.append({"ra_deg": float(s.ra.deg), "dec_deg": float(s.dec.deg), "flux_jy": f})
    cfg = {
        "input": {"simulate": True, "ms": str(work / "sim.ms")},
        "simulate": {
            "telescope": "mwa",
            "ra_deg": 0.0,
            "dec_deg": -27.0,
            "freq_hz": 1.5e8,
            "chan_width_hz": 2.0e6,
            "nchan": 2,
            "ha_start_h": -0.1,
            "ha_stop_h": 0.1,
            "integration_s": 120.0,
            "noise_jy": args.noise_jy,
            "seed": 1,
            "sources": sources,
        },
        "image": {"npix": n, "cell_arcsec": cell, "weighting": "natural"},
        "wterm": {"mode": "wstack", "epsilon": 1e-5},
        "gridder": {"precision": "double", "nthreads": args.threads},
        "deconvolution": {
            "algorithm": "clean",
            "minor": "hogbom",
            "niter": args.niter,
            "gain": 0.1,
            "mgain": 0.8,
            "threshold_jy": args.threshold_jy,
            "auto_threshold": 0.0,
            "nmajor": 50,
        },
        "output": {"path": str(work / "radimg.h5"), "overwrite": True, "checkpoint": False},
    }
    cfg_path = work / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".numba_cache")}
    radimg = [str(BIN / "radimg")]
    # simulate once (untimed) and warm numba's cache with a dirty-only run
    subprocess.run(
        [*radimg, "run", str(cfg_path), "--set", "deconvolution.algorithm=none"],
        check=True,
        capture_output=True,
        env=env,
    )
    t0 = time.perf_counter()
    r = subprocess.run([*radimg, "run", str(cfg_path)], capture_output=True, text=True, env=env)
    t_radimg = time.perf_counter() - t0
    if r.returncode:
        sys.exit(r.stdout + r.stderr)
    ours = read_product(work / "radimg.h5")

    exe = shutil.which("wsclean")
    if exe is None:
        sys.exit("wsclean not found: apt-get install wsclean")
    ws = [
        exe,
        "-quiet",
        "-size",
        str(n),
        str(n),
        "-scale",
        f"{cell}asec",
        "-weight",
        "natural",
        "-niter",
        str(args.niter),
        "-gain",
        "0.1",
        "-mgain",
        "0.8",
        "-threshold",
        str(args.threshold_jy),
        "-j",
        str(args.threads),
        "-use-wgridder",
        "-name",
        str(work / "ws"),
        str(work / "sim.ms"),
    ]
    t0 = time.perf_counter()
    w = subprocess.run(ws, capture_output=True, text=True)
    t_ws = time.perf_counter() - t0
    if w.returncode:
        sys.exit(w.stdout + w.stderr)
    from astropy.io import fits

    ws_img = np.squeeze(fits.getdata(work / "ws-image.fits")).astype(float)
    hdr = fits.getheader(work / "ws-image.fits")
    ours_img = ours["images"]["restored"].astype(float)
    corr = float(np.corrcoef(ours_img.ravel(), ws_img.ravel())[0, 1])
    srcs = []
    for x, y, f in pix:
        ox, oy, of = _peak_fit(ours_img, x, y)
        wx, wy, wf = _peak_fit(ws_img, x, y)
        srcs.append(
            {
                "pixel": [x, y],
                "flux_jy": f,
                "radimg": [ox, oy, of],
                "wsclean": [wx, wy, wf],
                "peak_ratio": of / wf,
                "offset_pix": float(np.hypot(ox - wx, oy - wy)),
            }
        )
    res = {
        "npix": n,
        "cell_arcsec": cell,
        "niter": args.niter,
        "threshold_jy": args.threshold_jy,
        "threads": args.threads,
        "wall_s": {"radimg": t_radimg, "wsclean": t_ws},
        "restored_correlation": corr,
        "peak_ratio": float(ours_img.max() / ws_img.max()),
        "beam_deg": {
            "radimg": [ours["wcs"][k] for k in ("bmaj_deg", "bmin_deg", "bpa_deg")],
            "wsclean": [hdr.get("BMAJ"), hdr.get("BMIN"), hdr.get("BPA")],
        },
        "residual_rms": {
            "radimg": float(ours["images"]["residual"].std()),
            "wsclean": float(np.squeeze(fits.getdata(work / "ws-residual.fits")).std()),
        },
        "sources": srcs,
    }
    print(json.dumps(res, indent=1))
    pathlib.Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
