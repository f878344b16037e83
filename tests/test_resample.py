"""Small inversion (radimg/ops/resample.py): the wrapped operator on a coarse grid against the
direct DFT at the requested cells, adjointness, the geometry it picks, its error bound."""

import math

import numpy as np
import pytest
from reference import C_LIGHT, dft_dirty, dft_predict, pixel_lm, point_source_vis

from radimg.ops.operator import WideFieldOperator, make_operator
from radimg.ops.resample import (
    INTERP_SHARE,
    SmallGeometry,
    SmallInversion,
    candidate_periods,
    flat_top,
    local_frequency_max,
    small_inversion,
    window_margin,
)
from radimg.ops.wproject import WProjectOperator

pytestmark = pytest.mark.unit

FREQ = np.array([1.0e8, 1.25e8])
ARCMIN = np.pi / (180.0 * 60.0)


def _obs(npix, cell, uv_max, w_max, nrow=1500, seed=5):
    """Random uvw (|u|, |v| <= uv_max, |w| <= w_max wavelengths at the top frequency), point
    sources on pixels (centre, near edges and corners), their exact visibilities."""
    rng = np.random.default_rng(seed)
    lam = C_LIGHT / FREQ.max()
    uvw = np.empty((nrow, 3))
    uvw[:, :2] = rng.uniform(-uv_max, uv_max, (nrow, 2)) * lam
    uvw[:, 2] = rng.uniform(-w_max, w_max, nrow) * lam
    wgt = rng.uniform(0.5, 1.5, (nrow, FREQ.size))
    wgt[rng.random(wgt.shape) < 0.05] = 0.0
    e = npix - 1
    pix = np.array([[npix // 2, npix // 2], [3, 5], [e - 2, e - 4], [npix // 4, e],
                    [e, 1], [npix // 3, 2 * npix // 3]])
    flux = np.array([1.0, 0.7, 0.5, 0.8, 0.3, 0.6])
    vis = np.zeros((nrow, FREQ.size), complex)
    for (iy, ix), s in zip(pix, flux, strict=True):
        l0, m0, _ = pixel_lm(npix, npix, cell, [[iy, ix]])
        vis += point_source_vis(uvw, FREQ, l0[0], m0[0], s)
    # checked pixels: sources, the four corners, the whole outer ring and random ones
    ring = np.concatenate([np.stack([np.zeros(npix, int), np.arange(npix)], 1),
                           np.stack([np.full(npix, e), np.arange(npix)], 1),
                           np.stack([np.arange(npix), np.zeros(npix, int)], 1),
                           np.stack([np.arange(npix), np.full(npix, e)], 1)])
    check = np.concatenate([pix, ring[:: max(1, npix // 32)], [[e, e]],
                            rng.integers(0, npix, (120, 2))])
    img = np.zeros((npix, npix))
    img[pix[:, 0], pix[:, 1]] = flux
    return dict(uvw=uvw, wgt=wgt, vis=vis, check=check, img=img)


def _build(d, mode, precision, eps=1e-5):
    def build(nx, ny, cell):
        return make_operator(d["uvw"], FREQ, nx, ny, cell, mode=mode, epsilon=eps,
                             precision=precision, weight_mask=d["wgt"] != 0)
    return build


# (npix, cell in arcmin, |u|,|v| max, |w| max): from cells far finer than the baselines need
# (large gain) to cells the data fill (the layer must step aside).
CASES = {
    "fine-20deg": (192, 6.25, 30.0, 60.0),
    "finer-8deg": (192, 2.5, 60.0, 30.0),
    "full-grid": (64, 18.0, 90.0, 60.0),
}


@pytest.mark.parametrize("mode", ["wstack", "wstack-wproject", "none"])
@pytest.mark.parametrize("case", list(CASES))
def test_dirty_and_predict_vs_dft(case, mode):
    npix, cell_am, uvm, wm = CASES[case]
    cell = cell_am * ARCMIN
    d = _obs(npix, cell, uvm, 0.0 if mode == "none" else wm)
    op = small_inversion(_build(d, mode, "double"), d["uvw"], FREQ, d["wgt"] != 0, npix, npix,
                         cell, epsilon=1e-5, mode=mode)
    layered = isinstance(op, SmallInversion)
    assert layered == (case != "full-grid"), getattr(op, "small_geometry", None)
    if layered:
        g = op.small_geometry
        assert g.nc_x < npix and g.nc_y < npix  # a real saving, not just a reshuffle
        inner = WProjectOperator if mode == "wstack-wproject" else WideFieldOperator
        assert isinstance(op.op, inner) and op.op.npix_x == g.nc_x
    dirty = op.hdot(d["vis"], d["wgt"])
    assert dirty.shape == (npix, npix) and dirty.dtype == np.float64
    chk = d["check"]
    ref = dft_dirty(d["uvw"], FREQ, d["vis"], d["wgt"], npix, npix, cell, pixels=chk)
    err = np.abs(dirty[chk[:, 0], chk[:, 1]] - ref).max() / np.abs(ref).max()
    assert err <= 1e-5, err
    vis = op.dot(d["img"])
    vref = dft_predict(d["uvw"], FREQ, d["img"], cell)
    keep = d["wgt"] != 0
    perr = np.abs(vis - vref)[keep].max() / np.abs(vref).max()
    assert perr <= 1e-5, perr
    assert np.all(vis[~keep] == 0)


def test_single_precision_vs_dft():
    npix, cell_am, uvm, wm = CASES["fine-20deg"]
    cell = cell_am * ARCMIN
    d = _obs(npix, cell, uvm, wm)
    op = small_inversion(_build(d, "wstack", "single"), d["uvw"], FREQ, d["wgt"] != 0, npix,
                         npix, cell, epsilon=1e-5, mode="wstack")
    assert isinstance(op, SmallInversion)
    dirty = op.hdot(d["vis"].astype(np.complex64), d["wgt"].astype(np.float32))
    assert dirty.dtype == np.float32
    chk = d["check"]
    ref = dft_dirty(d["uvw"], FREQ, d["vis"], d["wgt"], npix, npix, cell, pixels=chk)
    err = np.abs(dirty[chk[:, 0], chk[:, 1]] - ref).max() / np.abs(ref).max()
    assert err <= 1e-5, err


@pytest.mark.parametrize("mode", ["wstack", "wstack-wproject"])
def test_operator_adjointness(mode):
    npix, cell_am, uvm, wm = CASES["fine-20deg"]
    cell = cell_am * ARCMIN
    d = _obs(npix, cell, uvm, wm, nrow=400)
    op = small_inversion(_build(d, mode, "double"), d["uvw"], FREQ, d["wgt"] != 0, npix, npix,
                         cell, epsilon=1e-6, mode=mode)
    assert isinstance(op, SmallInversion)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((npix, npix))
    y = (rng.standard_normal(d["wgt"].shape) + 1j * rng.standard_normal(d["wgt"].shape))
    y *= d["wgt"] != 0
    lhs = np.vdot(y, op.dot(x))
    rhs = np.vdot(op.hdot(y), x)
    assert abs(lhs.real - rhs) <= 1e-12 * abs(rhs)


def _geom(npix_x, npix_y, nf_x, nf_y, nc_x, nc_y, cell=1e-3):
    return SmallGeometry(npix_x=npix_x, npix_y=npix_y, cell_x=cell, cell_y=1.1 * cell,
                         nf_x=nf_x, nf_y=nf_y, nc_x=nc_x, nc_y=nc_y, band_x=(nc_x - 1) // 2,
                         band_y=(nc_y - 1) // 2, beta_x=14.0, beta_y=18.0, fmax_x=0.0,
                         fmax_y=0.0, cost_ratio=0.5)


class _Null:
    pass


@pytest.mark.parametrize("sizes", [(100, 80, 120, 96, 50, 40), (101, 79, 121, 97, 51, 39),
                                   (64, 64, 72, 72, 30, 30)])
def test_resampling_is_exactly_adjoint(sizes):
    g = _geom(*sizes)
    s = SmallInversion(_Null(), g)
    rng = np.random.default_rng(2)
    c = rng.standard_normal((g.nc_y, g.nc_x))
    f = rng.standard_normal((g.npix_y, g.npix_x))
    lhs = np.vdot(s.to_fine(c), f)
    rhs = np.vdot(c, s.to_coarse(f))
    assert abs(lhs - rhs) <= 1e-13 * abs(lhs)
    # float32 in, float32 out
    assert s.to_fine(c.astype(np.float32)).dtype == np.float32
    assert s.to_coarse(f.astype(np.float32)).dtype == np.float32


def test_window_is_flat_then_zero():
    pos = np.linspace(-1.0, 1.0, 2001)
    w = flat_top(pos, 0.6, 0.15, 14.0)
    assert np.all(np.abs(w[np.abs(pos) <= 0.6] - 1.0) <= 1e-14)
    assert np.all(np.abs(w[np.abs(pos) >= 0.9]) <= 1e-14)
    ramp = (np.abs(pos) > 0.6) & (np.abs(pos) < 0.9)
    assert np.all(np.diff(w[(pos > 0.6) & (pos < 0.9)]) < 0) and np.all(w[ramp] < 1)


def test_resampling_error_bound_holds_and_is_not_vacuous():
    """A unit fringe (the worst single sample) at the edge of the band the geometry allows
    resamples within the bound's target; one at the coarse grid's Nyquist limit does not,
    so the check can fail."""
    npix, cell = 160, 1e-3
    nf = 240
    target = 1e-6
    period = nf * cell
    flat = (npix // 2) * cell
    k_w, beta = window_margin(0.5 * (0.5 * period - flat) / period, target)
    nc = 2 * (40 + k_w) + 2
    assert nc < nf
    g = SmallGeometry(npix_x=npix, npix_y=npix, cell_x=cell, cell_y=cell, nf_x=nf, nf_y=nf,
                      nc_x=nc, nc_y=nc, band_x=(nc - 1) // 2, band_y=(nc - 1) // 2,
                      beta_x=beta, beta_y=beta, fmax_x=0.0, fmax_y=0.0, cost_ratio=0.5)
    s = SmallInversion(_Null(), g)
    lc = (np.arange(nc) - nc // 2) * (period / nc)
    lf = (np.arange(npix) - npix // 2) * cell

    def err(f, phase=0.3):
        fc = np.cos(2 * np.pi * f * lc + phase)
        coarse = fc[:, None] * np.ones(nc)[None, :]
        exact = np.cos(2 * np.pi * f * lf + phase)[:, None] * np.ones(npix)[None, :]
        return np.abs(s.to_fine(coarse) - exact).max()

    f_ok = (g.band_y - k_w) / period  # cycles per radian: the band edge minus the margin
    assert max(err(f_ok), err(f_ok * 0.77, 1.1), err(0.5 * f_ok, 2.0)) <= target
    assert err(0.5 * nc / period) > 1e-2


def test_local_frequency_bound_is_the_max_over_the_period():
    rng = np.random.default_rng(4)
    uvw = rng.uniform(-300, 300, (200, 3))
    freq = np.array([1.0e8, 1.5e8])
    valid = rng.random((200, 2)) < 0.9
    periods = candidate_periods(128, 96, 2e-3, 2e-3)
    slopes = [(p[2], p[3]) for p in periods]
    got = local_frequency_max(uvw, freq, valid, slopes)
    nf_x, nf_y = periods[0][:2]
    hx, hy = 0.5 * nf_x * 2e-3, 0.5 * nf_y * 2e-3
    ll, mm = np.meshgrid(np.linspace(-hx, hx, 41), np.linspace(-hy, hy, 41))
    n = np.sqrt(1 - ll**2 - mm**2)
    u = (uvw[:, 0:1] * freq / C_LIGHT)[valid]
    v = (uvw[:, 1:2] * freq / C_LIGHT)[valid]
    w = (uvw[:, 2:3] * freq / C_LIGHT)[valid]
    # local frequency of each sample's fringe d/dl (u l + v m + w (n - 1)) over the period
    fx = np.abs(u[:, None] - w[:, None] * (ll / n).ravel()[None, :]).max()
    fy = np.abs(v[:, None] - w[:, None] * (mm / n).ravel()[None, :]).max()
    assert got[0, 0] >= fx and got[0, 1] >= fy
    np.testing.assert_allclose(got[0], [fx, fy], rtol=1e-12)  # reached at the corners


def test_off_or_unprofitable_gives_the_plain_operator():
    npix, cell_am, uvm, wm = CASES["fine-20deg"]
    cell = cell_am * ARCMIN
    d = _obs(npix, cell, uvm, wm, nrow=200)
    kw = dict(epsilon=1e-5, mode="wstack")
    op = small_inversion(_build(d, "wstack", "double"), d["uvw"], FREQ, None, npix, npix,
                         cell, enabled=False, **kw)
    assert isinstance(op, WideFieldOperator) and op.npix_x == npix
    # wstack-wproject needs square pixels: a non-square image is left alone
    op = small_inversion(_build(d, "wstack-wproject", "double"), d["uvw"], FREQ, None, npix,
                         npix - 64, cell, epsilon=1e-5, mode="wstack-wproject")
    assert isinstance(op, WProjectOperator)


def test_non_square_wstack_vs_dft():
    """wstack takes a non-square coarse grid whose cells differ per axis."""
    npix, cell_am, uvm, wm = CASES["finer-8deg"]
    cell = cell_am * ARCMIN
    d = _obs(npix, cell, uvm, wm, nrow=600)
    ny = npix - 64
    op = small_inversion(_build(d, "wstack", "double"), d["uvw"], FREQ, d["wgt"] != 0, npix,
                         ny, cell, epsilon=1e-5, mode="wstack")
    assert isinstance(op, SmallInversion) and (op.npix_y, op.npix_x) == (ny, npix)
    g = op.small_geometry
    assert g.cell_cx != g.cell_cy and op.op.npix_y == g.nc_y
    dirty = op.hdot(d["vis"], d["wgt"])
    rng = np.random.default_rng(0)
    chk = np.concatenate([[[0, 0], [ny - 1, npix - 1], [0, npix - 1], [ny - 1, 0]],
                          np.stack([rng.integers(0, ny, 150), rng.integers(0, npix, 150)], 1)])
    ref = dft_dirty(d["uvw"], FREQ, d["vis"], d["wgt"], npix, ny, cell, pixels=chk)
    err = np.abs(dirty[chk[:, 0], chk[:, 1]] - ref).max() / np.abs(ref).max()
    assert err <= 1e-5, err


def test_interp_share_leaves_the_operator_most_of_epsilon():
    assert INTERP_SHARE <= 0.5
    k, beta = window_margin(0.02, 1e-6)
    assert math.isfinite(k) and k > 0 and 4 <= beta <= 60


def test_window_envelopes_match_each_bump_transform():
    """The envelopes tabulated for all bump shapes at once (shared cosines) are each shape's
    own transform (es_correction, the same quadrature rule), normalised and made monotone."""
    from radimg.kernels.es import es_correction
    from radimg.ops import resample

    tables = resample._bump_envelopes()
    assert sorted(tables) == [float(b) for b in resample._BETAS]
    for beta in resample._BETAS:
        xi = np.arange(0.0, beta / np.pi + 12.0 + resample._XI_STEP, resample._XI_STEP)
        ft = np.abs(es_correction(xi, 2, beta, nquad=resample._NQUAD))
        ft /= ft[0]
        env, xi_max = tables[float(beta)]
        assert xi_max == xi[-1] and env.shape == xi.shape
        np.testing.assert_allclose(env, np.maximum.accumulate(ft[::-1])[::-1], rtol=0,
                                   atol=1e-13)
        assert np.all(np.diff(env) <= 0) and env[0] == 1.0


class _Resident:
    """The GPU operators' resident image methods (radimg/gpu/operator.py) on a CPU operator:
    what the pipeline calls when gridder.device is gpu."""

    resident = True

    def __init__(self, op, vis, wgt):
        self.op, self.vis, self.wgt = op, vis, wgt

    def psf_image(self):
        return self.op.hdot(np.ones_like(self.vis), self.wgt)

    def dirty_image(self):
        return self.op.hdot(self.vis, self.wgt)

    def residual_image(self, model):
        return self.op.hdot(self.vis - self.op.dot(model), self.wgt)

    def wdot(self, image):
        return self.op.dot(image) * self.wgt

    def whdot(self, vis):
        return self.op.hdot(vis, self.wgt)


def test_resident_image_methods_follow_dot_and_hdot():
    npix, cell_am, uvm, wm = CASES["finer-8deg"]
    cell = cell_am * ARCMIN
    d = _obs(npix, cell, uvm, wm, nrow=300)
    plain = small_inversion(_build(d, "wstack", "double"), d["uvw"], FREQ, d["wgt"] != 0, npix,
                            npix, cell, epsilon=1e-6, mode="wstack")
    assert isinstance(plain, SmallInversion)
    res = SmallInversion(_Resident(plain.op, d["vis"], d["wgt"]), plain.small_geometry)
    assert res.resident  # attributes pass through to the wrapped operator
    np.testing.assert_allclose(res.psf_image(), plain.hdot(np.ones_like(d["vis"]), d["wgt"]),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.dirty_image(), plain.hdot(d["vis"], d["wgt"]), rtol=0,
                               atol=1e-12)
    model = 0.3 * d["img"]
    ref = plain.hdot(d["vis"] - plain.dot(model), d["wgt"])
    np.testing.assert_allclose(res.residual_image(model), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.wdot(model), plain.dot(model) * d["wgt"], rtol=0,
                               atol=1e-12)
    np.testing.assert_allclose(res.whdot(d["vis"]), plain.hdot(d["vis"], d["wgt"]), rtol=0,
                               atol=1e-12)
