"""Flux scale off axis: a 1 Jy source far from the phase centre images to 1 Jy/beam and
CLEANs to 1 Jy, as in WSClean and CASA (docs/internals.md, "Units and conventions").

The simulator writes a point source of flux S as ``S exp(...)`` with no ``1 / n``. An
operator that divides by ``n`` (radimg before December 2026) gives a dirty peak of ``1 / n``
and a CLEAN flux of ``n`` there: 1.4% off for the source below (``n = 0.9864``), far outside
the tolerances. The source sits on a pixel centre (placed through the product's WCS), so the
dirty image at that pixel is the source's flux up to the operator's epsilon.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import yaml
from small_sim import pixel_sources, small_observation

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent

pytestmark = pytest.mark.integration

NPIX, CELL_ARCSEC = 256, 240.0  # a 17 deg field
# 100 pixels from the centre on both axes (south-east): l = m = 6.7 deg, n = 0.9864.
IX, IY = NPIX // 2 - 100, NPIX // 2 - 100


def _n_at(ix, iy):
    cell = np.radians(CELL_ARCSEC / 3600.0)
    l, m = -(ix - NPIX // 2) * cell, (iy - NPIX // 2) * cell  # noqa: E741
    return float(np.sqrt(1.0 - l * l - m * m))


def _run(tmp, name, whole=False, **over):
    cfg = {
        "input": {"simulate": True, "ms": str(tmp / "sim.ms")},
        "simulate": small_observation(pixel_sources([(IX, IY, 1.0)], NPIX, CELL_ARCSEC),
                                      nchan=1),
        "image": {"npix": NPIX, "cell_arcsec": CELL_ARCSEC, "weighting": "natural"},
        "wterm": {"mode": "wstack", "epsilon": 1.0e-6},
        "gridder": {"precision": "double", "nthreads": 1},
        "deconvolution": {"algorithm": "none"},
        "output": {"path": str(tmp / f"{name}.h5"), "overwrite": True, "checkpoint": False},
    }
    for key, val in over.items():
        sec, k = key.split(".")
        cfg[sec][k] = val
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [str(BIN / "radimg"), "run", str(path), "-q"]
    if not (BIN / "radimg").exists():
        cmd = [sys.executable, "-m", "radimg.cli", "run", str(path), "-q"]
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    from radimg.io.product import read_product

    prod = read_product(tmp / f"{name}.h5")
    return prod if whole else prod["images"]


def test_the_source_is_far_enough_off_axis():
    assert _n_at(IX, IY) < 0.99  # the old convention would be > 1% off


@pytest.mark.parametrize("mode", ["wstack", "wstack-wproject"])
def test_off_axis_dirty_peak_is_the_source_flux(tmp_path, mode):
    img = _run(tmp_path, mode, **{"wterm.mode": mode, "wterm.epsilon": 1.0e-5})
    dirty = img["dirty"]
    box = dirty[IY - 3 : IY + 4, IX - 3 : IX + 4]
    assert np.unravel_index(np.argmax(box), box.shape) == (3, 3), "peak off its WCS pixel"
    # Without the 1/n this is 1 to the operator's accuracy; with it, 1 / n = 1.0138.
    assert dirty[IY, IX] == pytest.approx(1.0, abs=1e-3)


def test_off_axis_clean_flux_and_restored_peak(tmp_path):
    img = _run(tmp_path, "clean", **{
        "deconvolution.algorithm": "clean", "deconvolution.niter": 2000,
        "deconvolution.gain": 0.1, "deconvolution.mgain": 0.8,
        "deconvolution.threshold_jy": 1.0e-3, "deconvolution.auto_threshold": 0.0})
    model, restored = img["model"], img["restored"]
    flux = float(model[IY - 2 : IY + 3, IX - 2 : IX + 3].sum())
    assert flux == pytest.approx(1.0, rel=3e-3)  # old convention: n = 0.986
    assert float(np.abs(model).sum()) == pytest.approx(flux, rel=1e-3)  # nothing elsewhere
    assert float(restored[IY, IX]) == pytest.approx(1.0, rel=5e-3)


def test_narrow_field_chebyshev_terms_flux_and_clean(tmp_path):
    """A 6.4' MeerKAT field at 1.4 GHz, auto mode: the operator the run builds uses the
    w-term's Chebyshev terms (radimg/kernels/wcheb.py), the off-axis source's dirty peak is
    its flux on its WCS pixel, and CLEAN recovers it."""
    import json

    cell = 1.5
    src = pixel_sources([(IX, IY, 1.0)], NPIX, cell, freq_hz=1.4e9)
    prod = _run(tmp_path, "narrow", whole=True, **{
        "simulate.telescope": "meerkat", "simulate.freq_hz": 1.4e9, "simulate.sources": src,
        "image.cell_arcsec": cell, "wterm.mode": "auto", "wterm.epsilon": 1.0e-5,
        "deconvolution.algorithm": "clean", "deconvolution.niter": 500,
        "deconvolution.gain": 0.1, "deconvolution.mgain": 0.8,
        "deconvolution.threshold_jy": 1.0e-3, "deconvolution.auto_threshold": 0.0})
    op = prod["run"]["operator_json"]
    op = json.loads(op) if isinstance(op, str) else op
    assert op["mode"] == "wstack" and op["w_kernel"] == "cheb", op
    dirty, model = prod["images"]["dirty"], prod["images"]["model"]
    box = dirty[IY - 3 : IY + 4, IX - 3 : IX + 4]
    assert np.unravel_index(np.argmax(box), box.shape) == (3, 3), "peak off its WCS pixel"
    assert dirty[IY, IX] == pytest.approx(1.0, abs=1e-4)
    assert float(model[IY - 2 : IY + 3, IX - 2 : IX + 3].sum()) == pytest.approx(1.0, rel=3e-3)
    # the whole dirty image, not only the peak: a direct DFT of the simulated MS at the
    # corners (largest |n - 1|) and random pixels, per unit weight as the product holds it
    from reference import dft_dirty

    from radimg.io.ms import read_ms

    d = read_ms(str(tmp_path / "sim.ms"), precision="double")
    wgt = d.weight.astype(np.float64)
    pix = np.concatenate([[[0, 0], [0, NPIX - 1], [NPIX - 1, 0], [NPIX - 1, NPIX - 1]],
                          np.random.default_rng(4).integers(0, NPIX, (16, 2))])
    ref = dft_dirty(d.uvw, d.freq, d.vis, wgt, NPIX, NPIX, np.radians(cell / 3600.0),
                    pixels=pix) / wgt.sum()
    assert np.abs(dirty[pix[:, 0], pix[:, 1]] - ref).max() <= 1e-5 * np.abs(dirty).max()
