"""ADMM's l2 bound on data the image cannot hold comes from the CLEAN of the same config
(issue #16, item 5).

ADMM returns the least-flux image inside its ball (for x >= 0 the Dirac part of SARA's l1
norm is the total flux / 3), so its flux and residual mean follow the depth of the model
that sets the ball. That model was one Hogbom cycle to auto_threshold sigma, blind to
auto_mask and to major cycles: on the real MWA snapshot (512 x 1') it held 209 Jy where the
config's own CLEAN (auto_threshold 1, auto_mask 3) holds 354 Jy, and ADMM's residual mean
stayed at 0.12 of its rms. Now the bound's model is the one ``algorithm: clean`` makes from
the same deconvolution settings: same components, major cycles and flux.
"""

import re

import numpy as np
import pytest
import yaml
from small_sim import pixel_sources, small_observation

from tests.test_pipeline import radimg

pytestmark = pytest.mark.integration  # runs `radimg run` (one rank) twice

N = 64
CELL = 120.0  # arcsec: a 2.1 deg image
# inside the image, and bright emission beyond its edge (the image cannot hold it)
PIX = [(32, 32, 2.0), (20, 40, 1.0), (45, 22, 0.6), (150, 30, 30.0), (-90, 80, 20.0)]


def _config(tmp, alg):
    cfg = {
        "input": {"simulate": True, "ms": str(tmp / "sim.ms")},
        "simulate": small_observation(pixel_sources(PIX, N, CELL), noise_jy=0.5),
        "image": {"npix": N, "cell_arcsec": CELL, "weighting": "natural"},
        "wterm": {"mode": "wstack", "epsilon": 1.0e-4},
        "gridder": {"precision": "double", "nthreads": 1},
        # the deep, masked recipe: its model differs from one Hogbom cycle to 1 sigma
        "deconvolution": {"algorithm": alg, "niter": 5000, "auto_threshold": 1.0,
                          "auto_mask": 3.0, "mgain": 0.8, "admm_power_iters": 10,
                          "admm_dual_iters": 2},
        "output": {"path": str(tmp / f"{alg}.h5"), "overwrite": True, "checkpoint": False},
    }
    path = tmp / f"{alg}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_admm_bound_model_is_the_configs_clean(tmp_path):
    from radimg.io.product import read_product

    r = radimg("run", _config(tmp_path, "clean"), ranks=1, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"CLEAN: (\d+) components in (\d+) major cycles", r.stdout + r.stderr)
    assert m, r.stdout
    comps, majors = int(m.group(1)), int(m.group(2))
    assert majors >= 2  # the auto-mask phase and the cleaning inside the mask
    flux = float(read_product(tmp_path / "clean.h5", images=["model"])["images"]["model"].sum())

    r = radimg("run", _config(tmp_path, "admm"), "--set", "deconvolution.niter=1", ranks=1,
               timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    text = r.stdout + r.stderr
    b = re.search(r"this config's CLEAN \(auto_threshold 1, auto_mask 3: (\d+) components in "
                  r"(\d+) major cycles, ([0-9.e+-]+) Jy\)", text)
    assert b, text
    assert (int(b.group(1)), int(b.group(2))) == (comps, majors)
    assert float(b.group(3)) == pytest.approx(flux, rel=1e-3)  # printed to 4 digits
    assert np.isfinite(flux) and flux > 0
