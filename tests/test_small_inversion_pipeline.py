"""``image.small_inversion`` end to end (issue #13): ``radimg run`` with the layer on equals
the run with it off, at 1 and 2 ranks, the product records the coarse geometry, and
``radimg plan`` predicts the same geometry."""

import json

import h5py
import numpy as np
import pytest
from test_pipeline import radimg, small_config

pytestmark = pytest.mark.integration

# 512 x 20" (2.8 deg): the MWA snapshot's ~1.2 k-wavelength baselines need ~3x coarser cells
IMAGE = {"image.npix": 512, "image.cell_arcsec": 20.0}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    out = {}
    for mode in ("wstack", "wstack-wproject"):
        for small, ranks in ((False, 1), (True, 1), (True, 2)):
            name = f"{mode}-{small}-{ranks}"
            cfg = small_config(tmp, **IMAGE, **{"wterm.mode": mode,
                                                "image.small_inversion": small,
                                                "output.path": str(tmp / f"{name}.h5")})
            r = radimg("run", cfg, ranks=ranks if ranks > 1 else None)
            assert r.returncode == 0, r.stdout + r.stderr
            with h5py.File(tmp / f"{name}.h5", "r") as f:
                out[name] = {
                    "dirty": f["images/dirty"][...].astype(float),
                    "psf": f["images/psf"][...].astype(float),
                    "lb": json.loads(f["run"].attrs["load_balance_json"]),
                    "log": r.stdout,
                }
            if small and ranks == 1:
                out[f"{mode}-plan"] = json.loads(radimg("plan", cfg, "--ranks", 1,
                                                        "--json").stdout)
    return out


@pytest.mark.parametrize("mode", ["wstack", "wstack-wproject"])
def test_same_images_with_and_without_small_inversion(runs, mode):
    off, on, two = (runs[f"{mode}-{s}-{n}"] for s, n in ((False, 1), (True, 1), (True, 2)))
    assert "small_inversion" not in off["lb"]
    g = on["lb"]["small_inversion"]
    assert max(g["coarse_npix"]) < 512 and "small inversion: gridding" in on["log"]
    for name in ("dirty", "psf"):
        peak = np.abs(off[name]).max()
        # each run is within epsilon (1e-6, double) of the direct DFT
        assert np.abs(on[name] - off[name]).max() <= 2e-6 * peak, name
        assert np.abs(two[name] - on[name]).max() <= 1e-6 * peak, name  # float32 product
    assert two["lb"]["small_inversion"] == g


@pytest.mark.parametrize("mode", ["wstack", "wstack-wproject"])
def test_plan_predicts_the_run_geometry(runs, mode):
    plan = runs[f"{mode}-plan"]
    got = runs[f"{mode}-True-1"]["lb"]["small_inversion"]
    assert plan["small_inversion"]["coarse_npix"] == got["coarse_npix"]
    assert plan["geometry"]["image_npix"] == [512, 512]
    assert plan["balanced"]["memory_breakdown"]["resample"][0] > 0


def test_clean_through_the_layer_matches(tmp_path):
    """Cotton-Schwab CLEAN predicts through R^H and images through R: the same components,
    model and residual as with the layer off (wstack, double)."""
    prods = {}
    for small in (False, True):
        cfg = small_config(tmp_path, **IMAGE, **{
            "image.small_inversion": small, "deconvolution.algorithm": "clean",
            "deconvolution.niter": 60, "deconvolution.nmajor": 3, "deconvolution.mgain": 0.5,
            "deconvolution.auto_threshold": 0.0, "output.path": str(tmp_path / f"{small}.h5"),
            "output.checkpoint": False})
        r = radimg("run", cfg)
        assert r.returncode == 0, r.stdout + r.stderr
        with h5py.File(tmp_path / f"{small}.h5", "r") as f:
            prods[small] = {k: f["images"][k][...].astype(float) for k in f["images"]}
            prods[small]["dec"] = json.loads(f["run"].attrs["deconvolution_json"])
            prods[small]["lb"] = json.loads(f["run"].attrs["load_balance_json"])
    off, on = prods[False], prods[True]
    assert "small_inversion" in on["lb"] and "small_inversion" not in off["lb"]
    assert on["dec"]["components"] == off["dec"]["components"] > 0
    peak = np.abs(off["dirty"]).max()
    for name in ("model", "residual", "restored"):
        assert np.abs(on[name] - off[name]).max() <= 1e-5 * peak, name
