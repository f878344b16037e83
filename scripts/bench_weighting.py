#!/usr/bin/env python
"""Imaging weights, radimg vs WSClean 3.1, on pyuvdata's real MWA snapshot (issue #12).

For natural, uniform and Briggs robust -2, -1, 0, 1, 2, at a cell where every baseline lies
inside the uv grid (default 512 x 50") and at one where baselines reach past it (default
512 x 150", 8484 of 72 600 samples beyond), both tools make a dirty image and a PSF of a
private copy of the MS:

    wsclean -size N N -scale CELLasec -niter 0 -weight W [R] -make-psf
            -no-update-model-required -use-wgridder -j 2 -name WORK/ws MS
    radimg run CFG        (one rank, in this process; wterm.mode wstack,
                           deconvolution.algorithm none, image.weighting W, image.robust R)

and the script prints, per weighting and cell, the Pearson correlation and the peak ratio
(radimg / WSClean) of the PSFs and of the dirty images over the same pixels (both north
up, east left), the samples each tool gridded (WSClean's "Gridded visibility count", radimg's
``samples_weighted``) and the samples radimg left out beyond the uv grid. ``--out`` writes
the same as JSON.

    python scripts/bench_weighting.py --out out/bench_weighting.json
    python scripts/bench_weighting.py --cells 1024:60 --weightings uniform briggs:0

The helpers are the ones tests/test_wsclean_weighting.py asserts with.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import test_wsclean_weighting as tw  # noqa: E402 - needs the sys.path entry above

DEFAULT_WEIGHTINGS = [
    "natural",
    "uniform",
    "briggs:-2",
    "briggs:-1",
    "briggs:0",
    "briggs:1",
    "briggs:2",
]


def _weighting(text):
    return tuple(text.split(":"))


def _cell(text):
    npix, cell = text.split(":")
    return int(npix), float(cell)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cells",
        nargs="+",
        default=["512:50", "512:150"],
        help="NPIX:CELL_ARCSEC pairs (default: 512:50 all inside the grid, 512:150 beyond)",
    )
    ap.add_argument(
        "--weightings",
        nargs="+",
        default=DEFAULT_WEIGHTINGS,
        help="natural, uniform or briggs:R (default: natural uniform briggs:-2..2)",
    )
    ap.add_argument("--workdir", help="keep the MS copy, images and configs here")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    exe = shutil.which("wsclean")
    if exe is None:
        print("wsclean is not installed (Debian package wsclean, 3.1)", file=sys.stderr)
        return 2
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="bench_weighting_"))
    work.mkdir(parents=True, exist_ok=True)
    ms = tw.copy_ms(work)
    rows = []
    header = (
        f"{'cell':>11} {'weighting':>12} {'psf corr':>10} {'psf peak':>9} "
        f"{'dirty corr':>11} {'dirty peak':>11} {'gridded ws/radimg':>18} {'beyond':>7}"
    )
    print(header)
    print("-" * len(header))
    for cell_text in args.cells:
        npix, cell = _cell(cell_text)
        for wtext in args.weightings:
            w = _weighting(wtext)
            t0 = time.perf_counter()
            theirs, log = tw.image_with_wsclean(exe, ms, work, npix, cell, w)
            t1 = time.perf_counter()
            ours, summary = tw.image_with_radimg(ms, work, npix, cell, w)
            t2 = time.perf_counter()
            rec = {
                "npix": npix,
                "cell_arcsec": cell,
                "weighting": w[0],
                "robust": float(w[1]) if len(w) > 1 else None,
                "wsclean_s": t1 - t0,
                "radimg_s": t2 - t1,
                "wsclean_gridded": tw.wsclean_gridded_count(log),
                "radimg_weighted": summary["samples_weighted"],
                "radimg_beyond_uv_grid": summary["samples_beyond_uv_grid"],
            }
            for kind in ("psf", "dirty"):
                corr, peak = tw.agreement(ours[kind], theirs[kind])
                rec[f"{kind}_corr"], rec[f"{kind}_peak_ratio"] = corr, peak
            rows.append(rec)
            print(
                f'{npix:>4} x {cell:>4g}" {" ".join(w):>12} {rec["psf_corr"]:>10.6f} '
                f"{rec['psf_peak_ratio']:>9.5f} {rec['dirty_corr']:>11.6f} "
                f"{rec['dirty_peak_ratio']:>11.5f} "
                f"{str(rec['wsclean_gridded']) + '/' + str(rec['radimg_weighted']):>18} "
                f"{rec['radimg_beyond_uv_grid']:>7}",
                flush=True,
            )
    worst = min(min(r["psf_corr"], r["dirty_corr"]) for r in rows)
    peak = max(max(abs(r["psf_peak_ratio"] - 1), abs(r["dirty_peak_ratio"] - 1)) for r in rows)
    print(f"lowest correlation {worst:.6f}; largest peak difference {100 * peak:.3f}%")
    if args.out:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "command": " ".join(["python", "scripts/bench_weighting.py", *sys.argv[1:]]),
                    "ms": "pyuvdata 1102865728_small.ms (real MWA, 10 channels, XX XY YX YY)",
                    "wsclean": "3.1, -use-wgridder -j 2",
                    "radimg": "1 rank, wterm.mode wstack, defaults otherwise",
                    "host": platform.node(),
                    "results": rows,
                    "lowest_correlation": worst,
                    "largest_peak_difference": peak,
                },
                indent=2,
            )
        )
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
