"""Imaging weights (radimg/ops/weighting.py): natural, uniform, Briggs, taper, density grids."""

import math

import numpy as np
import pytest

from radimg.ops.weighting import C_LIGHT, density_grid, imaging_weights, taper_sigma_uv

pytestmark = pytest.mark.unit

NPIX = 64
CELL = math.radians(1.0 / 60.0)  # 1 arcmin: uv cells of 1/(64 arcmin) ~ 53.7 wavelengths
FREQ = np.array([1.0e8, 1.1e8, 1.2e8])


def _data(seed=1, nrow=2000, flag_frac=0.1, sigma_m=300.0):
    rng = np.random.default_rng(seed)
    uvw = rng.normal(size=(nrow, 3)) * sigma_m
    wt = rng.uniform(0.5, 2.0, (nrow, FREQ.size))
    wt[rng.random(wt.shape) < flag_frac] = 0.0
    return uvw, wt


def _cells(uvw):
    lam = FREQ / C_LIGHT
    iu = np.floor(uvw[:, 0:1] * lam * NPIX * CELL + 0.5).astype(int)
    iv = np.floor(uvw[:, 1:2] * lam * NPIX * CELL + 0.5).astype(int)
    return iu, iv


def _kw(**extra):
    return dict(npix_x=NPIX, npix_y=NPIX, cell_rad=CELL, **extra)


def test_density_is_hermitian_and_counts_every_weight_twice():
    uvw, wt = _data(sigma_m=100.0)  # everything well inside the grid
    d = density_grid(uvw, FREQ, wt, NPIX, NPIX, CELL)
    assert d.shape == (NPIX, NPIX) and d.dtype == np.float64
    assert d.sum() == pytest.approx(2.0 * wt.sum(), rel=1e-12)
    # D(-u, -v) == D(u, v) away from the unpaired edge row/column.
    inner = d[1:, 1:]
    np.testing.assert_allclose(inner, inner[::-1, ::-1], rtol=0, atol=1e-12)


def test_density_ignores_flagged_samples():
    uvw, wt = _data()
    d0 = density_grid(uvw, FREQ, wt, NPIX, NPIX, CELL)
    wt2 = wt.copy()
    uvw2 = uvw.copy()
    uvw2[wt.sum(axis=1) == 0] = 0.0  # moving fully flagged rows changes nothing
    np.testing.assert_array_equal(density_grid(uvw2, FREQ, wt2, NPIX, NPIX, CELL), d0)


def test_density_of_parts_sums_to_serial():
    """Serial twin of the pipeline's Allreduce: the sum over row blocks equals the whole."""
    uvw, wt = _data()
    whole = density_grid(uvw, FREQ, wt, NPIX, NPIX, CELL)
    parts = sum(
        density_grid(uvw[a:b], FREQ, wt[a:b], NPIX, NPIX, CELL)
        for a, b in [(0, 300), (300, 1234), (1234, 2000)]
    )
    np.testing.assert_allclose(parts, whole, rtol=1e-13, atol=1e-12)
    # and the global density passed in gives the same weights as the serial computation
    for scheme in ("uniform", "briggs"):
        a = imaging_weights(
            uvw[:300], FREQ, wt[:300], scheme=scheme, robust=0.5, density=whole, **_kw()
        )
        b = imaging_weights(uvw, FREQ, wt, scheme=scheme, robust=0.5, **_kw())[:300]
        np.testing.assert_array_equal(a, b)


def test_natural_is_the_input_weight():
    uvw, wt = _data()
    out = imaging_weights(uvw, FREQ, wt.astype(np.float32), scheme="natural", **_kw())
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, wt.astype(np.float32))


def test_uniform_gives_unit_total_weight_per_occupied_cell():
    uvw, wt = _data(sigma_m=100.0)
    out = imaging_weights(uvw, FREQ, wt, scheme="uniform", **_kw())
    iu, iv = _cells(uvw)
    m = wt > 0
    # Sum over samples *and* their conjugates (the density is Hermitian).
    tot = np.zeros((NPIX, NPIX))
    np.add.at(tot, (iv[m] + NPIX // 2, iu[m] + NPIX // 2), out[m])
    np.add.at(tot, (-iv[m] + NPIX // 2, -iu[m] + NPIX // 2), out[m])
    occ = tot > 0
    np.testing.assert_allclose(tot[occ], 1.0, rtol=1e-12)


def test_briggs_limits():
    uvw, wt = _data()
    m = wt > 0
    uni = imaging_weights(uvw, FREQ, wt, scheme="uniform", **_kw())
    lo = imaging_weights(uvw, FREQ, wt, scheme="briggs", robust=-2.0, **_kw())
    hi = imaging_weights(uvw, FREQ, wt, scheme="briggs", robust=2.0, **_kw())
    r = lo[m] / uni[m]
    # robust -2: proportional to uniform; measured relative spread 6e-5 on this data.
    assert r.std() / r.mean() < 1e-3
    # robust +2: natural up to a constant; measured max deviation 0.26 % on this data.
    q = hi[m] / wt[m]
    assert np.max(np.abs(q / q.mean() - 1.0)) < 0.01


def test_zero_weights_stay_zero_everywhere():
    uvw, wt = _data()
    for scheme in ("natural", "uniform", "briggs"):
        out = imaging_weights(uvw, FREQ, wt, scheme=scheme, robust=0.0, taper_arcsec=120.0, **_kw())
        assert np.all(out[wt == 0] == 0)
        assert np.all(out[wt > 0] > 0)


def test_taper_convention():
    """Image-domain FWHM theta <-> exp(-rho^2 / (2 sigma_uv^2)), sigma_uv = 1/(2 pi sigma_l)."""
    theta = 60.0
    sig = taper_sigma_uv(theta)
    sigma_l = math.radians(theta / 3600.0) / (2 * math.sqrt(2 * math.log(2)))
    assert sig == pytest.approx(1.0 / (2 * math.pi * sigma_l))
    # At rho = sigma_uv the taper is exp(-1/2).
    lam = C_LIGHT / FREQ[0]
    uvw = np.array([[sig * lam, 0.0, 0.0]])
    out = imaging_weights(
        uvw, FREQ[:1], np.ones((1, 1)), scheme="natural", taper_arcsec=theta, **_kw()
    )
    assert out[0, 0] == pytest.approx(math.exp(-0.5), rel=1e-12)


def test_bad_scheme_and_shapes():
    uvw, wt = _data(nrow=10)
    with pytest.raises(ValueError, match="unknown weighting scheme"):
        imaging_weights(uvw, FREQ, wt, scheme="robust", **_kw())
    with pytest.raises(ValueError, match="weight must be"):
        density_grid(uvw, FREQ, wt[:, :2], NPIX, NPIX, CELL)
