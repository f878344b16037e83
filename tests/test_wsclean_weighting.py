"""Imaging weights on real data: radimg's natural, uniform and Briggs dirty images and PSFs of
pyuvdata's real MWA snapshot equal WSClean 3.1's, and samples beyond the uv grid are
handled the same at any rank count (issue #12, items 5 and 6).

Both tools image a private copy of the MS (WSClean may write into the MS it images), Stokes
I from the XX/YY correlations, at a cell where every baseline lies inside the uv grid
(512 x 50": |u|, |v| < 2063 wavelengths, baselines reach 1883) and at one where they reach
past it (512 x 150": 688 wavelengths, 8484 of the 72 600 samples beyond). WSClean runs with
``-use-wgridder`` (its default w-stacking gridder is less accurate on these 7-21 deg fields:
natural PSF correlation 0.9992 instead of 0.999996 at 50"). Both images are north up, east
left (WSClean's FITS and radimg's product alike), compared pixel for pixel.

The figures for every robust value come from ``python scripts/bench_weighting.py``.
"""

import json
import math
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from data_paths import MWA_MS, pyuvdata_ms
from test_wsclean import _ensure_wsclean, _has_option

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NPIX = 512
CELL_FITS = 50.0  # arcsec: every baseline inside the uv grid
CELL_BEYOND = 150.0  # arcsec: 8484 of 72 600 samples beyond it
CELL_COARSE = 240.0  # arcsec: the rank-count case (2627 of 7260 rows beyond)
WEIGHTINGS = [("natural",), ("uniform",), ("briggs", "-1"), ("briggs", "0"), ("briggs", "1")]
C_LIGHT = 299792458.0


# ---------------------------------------------------------------------------- helpers
def copy_ms(dst_dir):
    """A private copy of pyuvdata's real MWA MS (skips the test when pyuvdata lacks it)."""
    dst = pathlib.Path(dst_dir) / "mwa.ms"
    if not dst.exists():
        shutil.copytree(pyuvdata_ms(MWA_MS), dst)
    return dst


def _tag(npix, cell, weighting):
    return f"{npix}_{cell:g}_{'_'.join(weighting)}"


def image_with_wsclean(exe, ms, workdir, npix, cell_arcsec, weighting, threads=2):
    """WSClean 3.1 dirty image and PSF; returns ({"dirty", "psf"} float64 (y, x), log)."""
    name = str(pathlib.Path(workdir) / f"ws_{_tag(npix, cell_arcsec, weighting)}")
    cmd = [exe, "-size", str(npix), str(npix), "-scale", f"{cell_arcsec}asec", "-niter", "0"]
    cmd += ["-weight", *weighting, "-make-psf", "-no-update-model-required"]
    cmd += ["-j", str(threads), "-name", name]
    if _has_option(exe, "-use-wgridder"):
        cmd.append("-use-wgridder")
    r = subprocess.run(cmd + [str(ms)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from astropy.io import fits

    out = {}
    for kind in ("dirty", "psf"):
        with fits.open(f"{name}-{kind}.fits") as hdul:
            out[kind] = np.asarray(hdul[0].data, dtype=np.float64).squeeze()
    return out, r.stdout


def wsclean_gridded_count(log):
    """WSClean's "Gridded visibility count: N" (samples with a non-zero imaging weight)."""
    m = re.findall(r"Gridded visibility count: (\d+)", log)
    return int(m[-1]) if m else None


def radimg_config(ms, workdir, npix, cell_arcsec, weighting, **sections):
    tag = _tag(npix, cell_arcsec, weighting)
    cfg = {
        "input": {"ms": str(ms)},
        "image": {
            "npix": npix,
            "cell_arcsec": cell_arcsec,
            "weighting": weighting[0],
            "robust": float(weighting[1]) if len(weighting) > 1 else 0.0,
        },
        "wterm": {"mode": "wstack"},
        "gridder": {"nthreads": 1},
        "deconvolution": {"algorithm": "none"},
        "output": {"path": str(pathlib.Path(workdir) / f"r_{tag}.h5"), "overwrite": True},
    }
    for key, val in sections.items():
        sec, k = key.split("__")
        cfg.setdefault(sec, {})[k] = val
    path = pathlib.Path(workdir) / f"r_{tag}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg["output"]["path"]


def read_images(product):
    """({"dirty", "psf"} float64 (y, x), weighting summary from /run) of a product."""
    import h5py

    with h5py.File(product, "r") as f:
        imgs = {k: np.asarray(f["images"][k], dtype=np.float64) for k in ("dirty", "psf")}
        summary = json.loads(f["run"].attrs["weighting_json"])
    return imgs, summary


def image_with_radimg(ms, workdir, npix, cell_arcsec, weighting, **sections):
    """``radimg run`` in this process (one rank), deconvolution none, wstack mode."""
    from radimg import cli

    cfg, product = radimg_config(ms, workdir, npix, cell_arcsec, weighting, **sections)
    assert cli.main(["run", str(cfg), "-q"]) == 0
    return read_images(product)


def agreement(ours, theirs):
    """Pearson correlation and peak ratio (ours / theirs) over the same pixels."""
    a = ours - ours.mean()
    b = theirs - theirs.mean()
    corr = float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))
    return corr, float(ours.max() / theirs.max())


def beyond_grid_count(ms_path, npix, cell_arcsec, padding=1.2):
    """Samples of non-zero Stokes I weight beyond WSClean's weight grid, counted with numpy
    from the MS columns (independent of radimg's reader and numba kernels)."""
    import casacore.tables as ct

    with ct.table(str(ms_path), ack=False) as t:
        uvw = t.getcol("UVW")
        flag = t.getcol("FLAG")
        wspec = t.getcol("WEIGHT_SPECTRUM")
        cross = t.getcol("ANTENNA1") != t.getcol("ANTENNA2")
    with ct.table(str(ms_path) + "/SPECTRAL_WINDOW", ack=False) as t:
        freq = t.getcol("CHAN_FREQ")[0]
    # XX and YY (CORR_TYPE 9 10 11 12): both unflagged with weight > 0
    ok = (~flag[..., 0] & ~flag[..., 3] & (wspec[..., 0] > 0) & (wspec[..., 3] > 0)) & cross[
        :, None
    ]
    n = math.ceil(npix * padding)
    n += (4 - n % 4) % 4
    cell = math.radians(cell_arcsec / 3600.0)
    lam = C_LIGHT / freq
    u = uvw[:, 0:1] / lam
    v = uvw[:, 1:2] / lam
    s = np.where(v < 0, -1.0, 1.0)
    x = np.floor(s * u * n * cell + n // 2)
    y = np.floor(s * v * n * cell)
    inside = (x >= 0) & (x < n) & (y < n // 2)
    return int(np.count_nonzero(ok & ~inside)), int(np.count_nonzero(ok))


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wsclean_weighting")
    return {"tmp": tmp, "ms": copy_ms(tmp)}


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("cell", [CELL_FITS, CELL_BEYOND], ids=["all-fit", "beyond-grid"])
@pytest.mark.parametrize("weighting", WEIGHTINGS, ids=["-".join(w) for w in WEIGHTINGS])
def test_weighting_matches_wsclean_on_real_mwa(work, cell, weighting):
    exe = _ensure_wsclean()
    theirs, log = image_with_wsclean(exe, work["ms"], work["tmp"], NPIX, cell, weighting)
    ours, summary = image_with_radimg(work["ms"], work["tmp"], NPIX, cell, weighting)
    for kind in ("psf", "dirty"):
        corr, peak = agreement(ours[kind], theirs[kind])
        assert corr >= 0.999 and abs(peak - 1.0) <= 0.01, (kind, corr, peak)
    # the same samples are gridded: beyond the grid dropped and counted, as WSClean does
    n_beyond, n_good = beyond_grid_count(work["ms"], NPIX, cell)
    assert summary["samples_beyond_uv_grid"] == n_beyond
    assert summary["samples_weighted"] == n_good - n_beyond
    assert (n_beyond == 0) == (cell == CELL_FITS)
    gridded = wsclean_gridded_count(log)
    if gridded is not None:
        assert summary["samples_weighted"] == gridded


def test_rank_count_invariance_with_samples_beyond_the_grid(work):
    """The issue's coarse-cell case at radimg's defaults (wstack-wproject, single precision,
    Briggs 0): 1 and 3 ranks within 1e-6 of the peak (was 2.1e-5: the w-stack cost model
    ran on a per-rank random subsample and chose 84 / 91 / 98 stacks at 1 / 2 / 3 ranks)."""
    from test_pipeline import radimg

    weighting = ("briggs", "0")
    runs = {}
    for ranks in (1, 3):
        sub = work["tmp"] / f"ranks{ranks}"
        sub.mkdir(exist_ok=True)
        cfg, product = radimg_config(
            work["ms"], sub, NPIX, CELL_COARSE, weighting, wterm__mode="wstack-wproject"
        )
        r = radimg("run", cfg, ranks=ranks, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "left out, as WSClean does" in r.stderr
        runs[ranks] = read_images(product)
    (one, s1), (three, s3) = runs[1], runs[3]
    assert s1 == s3 and s1["samples_beyond_uv_grid"] > 0
    assert s1["samples_beyond_uv_grid"] == beyond_grid_count(work["ms"], NPIX, CELL_COARSE)[0]
    for kind in ("dirty", "psf"):
        diff = np.abs(three[kind] - one[kind]).max() / np.abs(one[kind]).max()
        assert diff <= 1e-6, (kind, diff)
