#!/usr/bin/env python
"""Dirty cubes on a real Measurement Set, radimg vs WSClean 3.1 (issue #15 check).

Default case: pyuvdata's real MWA snapshot (10 channels 171-200 MHz, XX XY YX YY), Stokes
I, Q, U, V in 2 output channels, natural weighting, 512 x 50" (a 7 deg field)::

    mpiexec -n RANKS radimg run CFG  (image.stokes IQUV, image.channels_out 2, double, eps 1e-6)
    wsclean -use-wgridder -wgridder-accuracy 1e-5 -j 2 -size 512 512 -scale 50asec
            -weight natural -channels-out 2 -pol IQUV -no-update-model-required
            -name WORK/ws WORK/ws.ms

each on its own copy of the MS under ``--work`` (WSClean writes into the MS it images).
For every Stokes parameter and output channel (and the MFS images) it reports the Pearson
correlation, the peak ratio (radimg's largest |pixel| over WSClean's, at the same pixel or
not) and the largest difference relative to WSClean's peak, for radimg's images as they are
and multiplied by ``n = sqrt(1 - l^2 - m^2)`` (a control: neither WSClean 3.1's dirty images
nor, since the Jy/pixel convention, radimg's carry a ``1/n``, docs/internals.md "Units and
conventions", so the "x n" column should be the worse one off axis). Measured on a 28 deg
field, ``--npix 2048``: radimg as it is, correlation >= 0.99999 and peaks within 1e-4 for
every image, 2.8-5.5e-4 of the peak in the inner 80% of the image; x n: 1.2-2.5e-2 there
(before the convention change radimg as it is differed by those 1.5-2.5e-2). The issue's
criterion: correlation >= 0.9999 and peaks within 0.5%.

    python scripts/bench_wsclean_cube.py --work /tmp/me/cube [--npix 2048] [--ranks 2]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench_memory import _mpiexec, _radimg  # noqa: E402


def _real_ms():
    import pyuvdata

    return pathlib.Path(pyuvdata.__file__).parent / "data" / "1102865728_small.ms"


def _copy(ms, dst):
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(ms, dst)
    return dst


def _stats(r, w):
    ir = np.unravel_index(np.argmax(np.abs(r)), r.shape)
    iw = np.unravel_index(np.argmax(np.abs(w)), w.shape)
    return {
        "corr": float(np.corrcoef(r.ravel(), w.ravel())[0, 1]),
        "peak_ratio": float(r[ir] / w[iw]),
        "same_peak_pixel": bool(ir == iw),
        "max_diff_over_peak": float(np.abs(r - w).max() / np.abs(w).max()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="scratch directory (MS copies, products)")
    ap.add_argument("--ms", default=None, help="MS (default: pyuvdata's MWA snapshot)")
    ap.add_argument("--npix", type=int, default=512)
    ap.add_argument("--cell-arcsec", type=float, default=50.0)
    ap.add_argument("--channels-out", type=int, default=2)
    ap.add_argument("--stokes", default="IQUV")
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON results")
    args = ap.parse_args()
    from astropy.io import fits

    from radimg.io.product import read_product

    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    src = pathlib.Path(args.ms) if args.ms else _real_ms()
    ws_cmd = ["wsclean", "-use-wgridder", "-wgridder-accuracy", "1e-5", "-j", "2",
              "-size", str(args.npix), str(args.npix), "-scale", f"{args.cell_arcsec}asec",
              "-weight", "natural", "-channels-out", str(args.channels_out),
              "-pol", args.stokes, "-no-update-model-required", "-name", str(work / "ws"),
              str(_copy(src, work / "ws.ms"))]
    subprocess.run(ws_cmd, check=True, capture_output=True)
    cfg = {
        "input": {"ms": str(_copy(src, work / "radimg.ms"))},
        "image": {"npix": args.npix, "cell_arcsec": args.cell_arcsec, "weighting": "natural",
                  "stokes": args.stokes, "channels_out": args.channels_out},
        "wterm": {"epsilon": 1e-6},
        "gridder": {"precision": "double"},
        "deconvolution": {"algorithm": "none"},
        "output": {"path": str(work / "radimg.h5"), "overwrite": True},
    }
    (work / "radimg.yaml").write_text(yaml.safe_dump(cfg))
    rd_cmd = _mpiexec(args.ranks) + _radimg() + ["run", str(work / "radimg.yaml"), "-q"]
    subprocess.run(rd_cmd, check=True, capture_output=True)
    prod = read_product(work / "radimg.h5", ["dirty", "dirty_mfs"])
    stokes = prod["cube"]["dirty"]["stokes"]
    n = args.npix
    cell = np.radians(args.cell_arcsec / 3600.0)
    iy, ix = np.mgrid[0:n, 0:n]
    l, m = -(ix - n // 2) * cell, (iy - n // 2) * cell
    nn = np.sqrt(1.0 - l * l - m * m)
    rows = []
    labels = [f"{c:04d}" for c in range(args.channels_out)] + ["MFS"]
    for p, s in enumerate(stokes):
        for c, lab in enumerate(labels):
            w = fits.getdata(work / f"ws-{lab}-{s}-dirty.fits")[0, 0].astype(np.float64)
            r = (prod["images"]["dirty"][p, c] if lab != "MFS"
                 else prod["images"]["dirty_mfs"][p]).astype(np.float64)
            rows.append({"stokes": s, "channel": lab, "as_is": _stats(r, w),
                         "times_n": _stats(r * nn, w)})
    print(f"{'':10}{'radimg as it is':>36}   {'radimg x n':>30}")
    print(f"{'image':10}{'corr':>12}{'peak ratio':>12}{'maxdiff':>10}   "
          f"{'corr':>12}{'peak ratio':>12}{'maxdiff':>10}")
    for r in rows:
        a, b = r["as_is"], r["times_n"]
        print(f"{r['stokes'] + ' ' + r['channel']:10}{a['corr']:12.7f}{a['peak_ratio']:12.5f}"
              f"{a['max_diff_over_peak']:10.1e}   {b['corr']:12.7f}{b['peak_ratio']:12.5f}"
              f"{b['max_diff_over_peak']:10.1e}")
    ok = all(r["as_is"]["corr"] >= 0.9999 and abs(r["as_is"]["peak_ratio"] - 1) <= 0.005
             for r in rows)
    print(f"corr >= 0.9999 and peaks within 0.5% (radimg as it is): {'yes' if ok else 'NO'}")
    res = {"wsclean_command": " ".join(ws_cmd), "radimg_command": " ".join(rd_cmd),
           "radimg_config": cfg, "images": rows, "criterion_met": ok}
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
