"""Dirty cubes share one operator per output channel between Stokes products whose sample
masks are equal (issue #15 item 5): the images equal those of an operator built per image
exactly, fewer operators are built, and the "beyond the uv grid" warning comes once.

Oracle: the same job with sharing turned off (``same_mask`` forced False, i.e. one
operator per image as before), compared bit for bit; the images themselves are checked
against a direct DFT in tests/test_cube_pipeline.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.integration

tables = pytest.importorskip("casacore.tables")


@pytest.fixture(scope="module")
def flagged_ms(tmp_path_factory):
    """VLA, linear feeds, 1 window of 4 channels, a polarised source; XY flagged on every
    7th row, so I/Q (XX, YY) and U/V (XY, YX) have different sample masks."""
    from radimg.sim.simulate import simulate

    ms = tmp_path_factory.mktemp("share") / "pol.ms"
    simulate({
        "telescope": "vla", "ra_deg": 150.0, "dec_deg": 30.0, "freq_hz": 1.4e9,
        "chan_width_hz": 4e6, "nchan": 4, "ha_start_h": -0.03, "ha_stop_h": 0.03,
        "integration_s": 100.0, "noise_jy": 0.01, "seed": 4, "feeds": "linear",
        "sources": [{"ra_deg": 150.02, "dec_deg": 30.01, "flux_jy": 2.0, "q_jy": 0.3,
                     "u_jy": -0.2, "v_jy": 0.1}],
    }, ms)
    t = tables.table(str(ms), readonly=False, ack=False)
    flag = t.getcol("FLAG")
    flag[::7, :, 1] = True
    t.putcol("FLAG", flag)
    t.close()
    return ms


def _cube(ms, out, monkeypatch, share):
    """Run the cube (IQUV x 2 output channels, Briggs, a cell coarse enough that the
    longest baselines fall beyond the uv grid); returns the images, the number of
    operators built and the uv-grid warnings."""
    import h5py
    from mpi4py import MPI

    import radimg.pipeline.cube as cube
    import radimg.pipeline.operator as operator
    from radimg.config import resolve
    from radimg.pipeline import run

    built = []
    make = operator.make_backend
    monkeypatch.setattr(operator, "make_backend", lambda *a: built.append(1) or make(*a))
    if not share:
        monkeypatch.setattr(cube, "same_mask", lambda comm, a, b: False)
    cfg = {
        "input": {"ms": str(ms)},
        "image": {"npix": 64, "cell_arcsec": 30.0, "weighting": "briggs", "robust": 0.0,
                  "stokes": "IQUV", "channels_out": 2},
        "wterm": {"mode": "wstack", "epsilon": 1e-6},
        "gridder": {"nthreads": 1, "precision": "double"},
        "deconvolution": {"algorithm": "none"},
        "output": {"path": str(out), "overwrite": True},
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(resolve(yaml_text=yaml.safe_dump(cfg)), verbose=0, comm=MPI.COMM_SELF)
    monkeypatch.undo()
    with h5py.File(out) as f:
        images = {k: f["images"][k][()] for k in ("dirty", "psf", "dirty_mfs", "psf_mfs")}
        wjson = f["run"].attrs["weighting_json"]
    uv = [w for w in caught if "beyond the uv grid" in str(w.message)
          or "too coarse for the longest" in str(w.message)]
    return images, len(built), len(uv), wjson


def test_shared_operator_images_equal_one_operator_per_image(flagged_ms, tmp_path, monkeypatch):
    shared, n_shared, warn_shared, w_shared = _cube(flagged_ms, tmp_path / "s.h5", monkeypatch,
                                                    True)
    own, n_own, _, w_own = _cube(flagged_ms, tmp_path / "o.h5", monkeypatch, False)
    assert n_own == 8  # IQUV x 2 output channels, one operator each
    assert n_shared == 4  # per channel: one for I and Q (XX, YY), one for U and V (XY, YX)
    for name, img in own.items():
        np.testing.assert_array_equal(shared[name], img, err_msg=name)
    assert w_shared == w_own  # per-image weight sums and counts in weighting_json
    # the longest baselines lie beyond the uv grid in every image: one warning per cube
    import json

    per_image = json.loads(w_shared)["per_image"]
    assert len(per_image) == 8 and all(i["samples_beyond_uv_grid"] > 0 for i in per_image)
    assert warn_shared == 1
