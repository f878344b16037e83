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


def _run(tmp, name, **over):
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

    return read_product(tmp / f"{name}.h5")["images"]


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
