"""Measurement operator (modes none and wstack) against the direct DFT and ducc0.wgridder."""

import dataclasses

import numpy as np
import pytest
from reference import C_LIGHT, dft_dirty, dft_predict, pixel_lm, point_source_vis

from radimg.ops.fft import available, get_fft
from radimg.ops.operator import make_operator

pytestmark = pytest.mark.unit

NPIX = 256
CELL = np.deg2rad(6.0 / 60.0)  # 256 x 6' = 25.6 deg field
FREQ = np.array([1.0e8, 1.25e8])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    nrow = 2000
    lam = C_LIGHT / FREQ.max()
    uvmax = 0.48 / CELL  # longest baseline just inside the image's Nyquist limit
    uvw = np.empty((nrow, 3))
    uvw[:, :2] = rng.uniform(-uvmax, uvmax, (nrow, 2)) * lam
    uvw[:, 2] = rng.uniform(-600.0, 600.0, nrow) * lam  # |w| <= 600 wavelengths
    wgt = rng.uniform(0.5, 1.5, (nrow, FREQ.size))
    # Sky: a few point sources across the field, including far from the centre.
    pix = np.array([[128, 128], [20, 30], [230, 200], [60, 240], [250, 5]])
    flux = np.array([1.0, 0.7, 0.5, 0.8, 0.3])
    vis = np.zeros((nrow, FREQ.size), complex)
    for (iy, ix), s in zip(pix, flux):
        l0, m0, _ = pixel_lm(NPIX, NPIX, CELL, [[iy, ix]])
        vis += point_source_vis(uvw, FREQ, l0[0], m0[0], s)
    # Pixels to check: sources, corners, random.
    check = np.concatenate([pix, [[0, 0], [0, NPIX - 1], [NPIX - 1, 0], [NPIX - 1, NPIX - 1]],
                            rng.integers(0, NPIX, (150, 2))])
    return dict(uvw=uvw, wgt=wgt, vis=vis, check=check, sky_pix=pix, sky_flux=flux, rng=rng)


def _coplanar(uvw):
    out = uvw.copy()
    out[:, 2] = 0.0
    return out


@pytest.mark.parametrize("mode,precision,tol", [("wstack", "double", 1e-5),
                                                ("wstack", "single", 1e-4),
                                                ("none", "double", 1e-5)])
def test_dirty_vs_dft(data, mode, precision, tol):
    uvw = data["uvw"] if mode == "wstack" else _coplanar(data["uvw"])
    op = make_operator(uvw, FREQ, NPIX, NPIX, CELL, mode=mode, epsilon=1e-5,
                       precision=precision)
    dirty = op.hdot(data["vis"], data["wgt"])
    assert dirty.dtype == (np.float32 if precision == "single" else np.float64)
    ref = dft_dirty(uvw, FREQ, data["vis"], data["wgt"], NPIX, NPIX, CELL, pixels=data["check"])
    got = dirty[data["check"][:, 0], data["check"][:, 1]]
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err <= tol, err


@pytest.mark.parametrize("mode,precision,tol", [("wstack", "double", 1e-5),
                                                ("wstack", "single", 1e-4),
                                                ("none", "double", 1e-5)])
def test_predict_vs_dft(data, mode, precision, tol):
    uvw = data["uvw"] if mode == "wstack" else _coplanar(data["uvw"])
    rng = np.random.default_rng(3)
    img = np.zeros((NPIX, NPIX))
    img[rng.integers(0, NPIX, 40), rng.integers(0, NPIX, 40)] = rng.uniform(0.2, 1.0, 40)
    op = make_operator(uvw, FREQ, NPIX, NPIX, CELL, mode=mode, precision=precision)
    vis = op.dot(img)
    assert vis.dtype == (np.complex64 if precision == "single" else np.complex128)
    ref = dft_predict(uvw, FREQ, img, CELL)
    err = np.abs(vis - ref).max() / np.abs(ref).max()
    assert err <= tol, err


@pytest.mark.parametrize("mode", ["none", "wstack"])
def test_adjointness(data, mode):
    rng = np.random.default_rng(7)
    op = make_operator(data["uvw"], FREQ, NPIX, NPIX, CELL, mode=mode)
    x = rng.normal(size=(NPIX, NPIX))
    y = rng.normal(size=data["vis"].shape) + 1j * rng.normal(size=data["vis"].shape)
    lhs = np.vdot(op.dot(x), y).real
    rhs = np.vdot(x, op.hdot(y))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


def test_matches_ducc0(data):
    wx = pytest.importorskip("ducc0.wgridder.experimental")
    uvw, vis, wgt = data["uvw"], data["vis"], data["wgt"]
    op = make_operator(uvw, FREQ, NPIX, NPIX, CELL, mode="wstack", epsilon=1e-6)
    ours = op.hdot(vis, wgt)
    # divide_by_n=False: ducc0's default image carries the 1/n that radimg's Jy/pixel
    # convention leaves out (docs/internals.md, "Units and conventions").
    dd = wx.vis2dirty(uvw=uvw, freq=FREQ, vis=vis, wgt=wgt, npix_x=NPIX, npix_y=NPIX,
                      pixsize_x=CELL, pixsize_y=CELL, epsilon=1e-6, do_wgridding=True,
                      nthreads=1, divide_by_n=False)
    # ducc0's first axis runs west, its second south (DESIGN.md): ours[iy, ix] =
    # dd[ix, (npix_y - iy) % npix_y]; row iy = 0 has no counterpart in ducc0's image.
    iy, ix = np.meshgrid(np.arange(1, NPIX), np.arange(NPIX), indexing="ij")
    theirs = dd[ix, NPIX - iy]
    assert np.abs(ours[1:] - theirs).max() <= 1e-5 * np.abs(theirs).max()
    # And the forward direction: dirty2vis takes the image in ducc0's orientation.
    rng = np.random.default_rng(5)
    img = np.zeros((NPIX, NPIX))
    img[1 + rng.integers(0, NPIX - 1, 30), rng.integers(0, NPIX, 30)] = 1.0
    dimg = np.zeros((NPIX, NPIX))
    dimg[ix, NPIX - iy] = img[1:]
    v_theirs = wx.dirty2vis(uvw=uvw, freq=FREQ, dirty=dimg, pixsize_x=CELL, pixsize_y=CELL,
                            epsilon=1e-6, do_wgridding=True, nthreads=1, divide_by_n=False)
    v_ours = op.dot(img)
    assert np.abs(v_ours - v_theirs).max() <= 1e-5 * np.abs(v_theirs).max()


def test_threads_match_one_thread(data):
    op1 = make_operator(data["uvw"], FREQ, NPIX, NPIX, CELL, mode="wstack", nthreads=1,
                        fft="scipy")
    op2 = make_operator(data["uvw"], FREQ, NPIX, NPIX, CELL, mode="wstack", nthreads=2,
                        fft="scipy")
    a, b = op1.hdot(data["vis"], data["wgt"]), op2.hdot(data["vis"], data["wgt"])
    assert np.abs(a - b).max() <= 1e-13 * np.abs(a).max()
    img = np.zeros((NPIX, NPIX))
    img[100, 70] = 1.0
    va, vb = op1.dot(img), op2.dot(img)
    assert np.abs(va - vb).max() <= 1e-13 * np.abs(va).max()


def test_psf_and_point_source(data):
    uvw, wgt = data["uvw"], data["wgt"]
    op = make_operator(uvw, FREQ, NPIX, NPIX, CELL, mode="wstack")
    psf = op.hdot(np.ones_like(data["vis"]), wgt) / wgt.sum()
    assert np.unravel_index(np.argmax(psf), psf.shape) == (NPIX // 2, NPIX // 2)
    assert abs(psf[NPIX // 2, NPIX // 2] - 1.0) < 1e-6
    vis = point_source_vis(uvw, FREQ, 0.0, 0.0, 1.0)
    dirty = op.hdot(vis, wgt) / wgt.sum()
    assert abs(dirty[NPIX // 2, NPIX // 2] - 1.0) < 1e-6


def test_stage_methods_compose(data):
    uvw, vis, wgt = data["uvw"], data["vis"], data["wgt"]
    op = make_operator(uvw, FREQ, NPIX, NPIX, CELL, mode="wstack", nthreads=2)
    ref = op.hdot(vis, wgt)
    n = vis.size
    halves = [np.arange(0, n, 2), np.arange(1, n, 2)]  # two "ranks" of samples
    lays = [op.layout(h) for h in halves]
    acc = np.zeros((NPIX, NPIX))
    for p in range(op.stats["nplanes"]):
        grid = op.new_grid()
        for lay in lays:
            op.grid_samples(vis, p, idx=lay, weight=wgt, out=grid)
        op.plane_grid_to_image(grid, p, out=acc)
    assert np.abs(acc - ref).max() <= 1e-12 * np.abs(ref).max()
    img = np.zeros((NPIX, NPIX))
    img[40, 90] = 1.0
    vref = op.dot(img)
    v = np.zeros_like(vref)
    for p in range(op.nplanes):
        fgrid = op.image_to_plane_grid(img, p)
        for idx in halves:
            op.degrid_samples(fgrid, p, idx=idx, out=v)
    assert np.abs(v - vref).max() <= 1e-12 * np.abs(vref).max()


def test_weight_mask_drops_samples(data):
    uvw, vis, wgt = data["uvw"], data["vis"], data["wgt"].copy()
    wgt[::3] = 0.0
    op = make_operator(uvw, FREQ, NPIX, NPIX, CELL, mode="wstack", weight_mask=wgt)
    assert op.stats["nsamples"] == np.count_nonzero(wgt)
    full = make_operator(uvw, FREQ, NPIX, NPIX, CELL, mode="wstack")
    assert op.stats["nplanes"] <= full.stats["nplanes"]
    ref = dft_dirty(uvw, FREQ, vis, wgt, NPIX, NPIX, CELL, pixels=data["check"][:20])
    got = op.hdot(vis, wgt)[data["check"][:20, 0], data["check"][:20, 1]]
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    v = op.dot(np.eye(NPIX))
    assert np.all(v[wgt == 0] == 0)


def test_factory_modes(data):
    from radimg.ops.wproject import WProjectOperator

    with pytest.raises(ValueError, match="unknown mode"):
        make_operator(data["uvw"], FREQ, 64, 64, CELL, mode="bogus")
    # the geometry is resolved once by the factory and handed to the operator it builds
    op = make_operator(data["uvw"][:200], FREQ, 64, 64, CELL, mode="wstack-wproject",
                       epsilon=1e-4, nstacks=3)
    assert isinstance(op, WProjectOperator)
    g = op.geometry
    assert (g.mode, g.epsilon, g.nstacks, g.npix_x) == ("wstack-wproject", 1e-4, 3, 64)
    with pytest.raises(ValueError, match="w-stacks"):
        WProjectOperator(data["uvw"], FREQ, dataclasses.replace(g, centres=()))
    with pytest.raises(ValueError, match="nstacks"):
        make_operator(data["uvw"], FREQ, 64, 64, CELL * 4, mode="wstack", nstacks=8)


@pytest.mark.parametrize("name", ["ducc0", "scipy", "fftw", "numpy", "auto"])
def test_fft_backends(name):
    if name not in ("auto", *available()):
        pytest.skip(f"{name} not installed")
    rng = np.random.default_rng(0)
    for dt in (np.complex64, np.complex128):
        a = (rng.normal(size=(48, 40)) + 1j * rng.normal(size=(48, 40))).astype(dt)
        f = get_fft(name, nthreads=2)
        for _ in range(3):  # auto: try each candidate, then keep one
            fa = f.forward(a.copy(), overwrite=True)
            ba = f.backward(a)
        tol = 1e-4 if dt == np.complex64 else 1e-12
        np.testing.assert_allclose(fa, np.fft.fft2(a), rtol=0, atol=tol * np.abs(fa).max())
        np.testing.assert_allclose(ba, np.fft.ifft2(a) * a.size, rtol=0,
                                   atol=tol * np.abs(ba).max())


@pytest.mark.parametrize("precision,eps", [("double", 1e-5), ("single", 1e-4)])
def test_auto_geometry_meets_epsilon(data, precision, eps):
    """oversampling='auto' (its own u/v and w factors, cost model) is as accurate as asked,
    both directions, and rebuilds the same geometry from the resolved factors."""
    from radimg.ops.geometry import Field, resolve_geometry

    uvw, vis, wgt = data["uvw"], data["vis"], data["wgt"]
    op = make_operator(uvw, FREQ, NPIX, NPIX, CELL, mode="wstack", epsilon=eps,
                       precision=precision, oversampling="auto")
    ref = dft_dirty(uvw, FREQ, vis, wgt, NPIX, NPIX, CELL, pixels=data["check"])
    got = op.hdot(vis, wgt)[data["check"][:, 0], data["check"][:, 1]]
    assert np.abs(got - ref).max() <= 0.5 * eps * np.abs(ref).max()
    rng = np.random.default_rng(3)
    img = np.zeros((NPIX, NPIX))
    img[rng.integers(0, NPIX, 40), rng.integers(0, NPIX, 40)] = rng.uniform(0.2, 1.0, 40)
    vref = dft_predict(uvw, FREQ, img, CELL)
    assert np.abs(op.dot(img) - vref).max() <= 0.5 * eps * np.abs(vref).max()
    absw = np.abs(uvw[:, 2:3] * FREQ / C_LIGHT)
    args = (Field(NPIX, NPIX, CELL, CELL), eps, "wstack", absw.size, absw.min(), absw.max())
    g = resolve_geometry(*args, precision=precision)
    assert g == op.geometry
    assert (g.oversampling, g.oversampling_w) == (op.oversampling, op.oversampling_w)
    again = make_operator(uvw, FREQ, NPIX, NPIX, CELL, mode="wstack", epsilon=eps,
                          precision=precision, oversampling=g.oversampling,
                          oversampling_w=g.oversampling_w)
    assert again.spec == op.spec
    assert (g.W, g.Ww, g.nplanes) == (op.spec.W, op.spec.Ww, op.nplanes)


def test_explicit_oversampling_keeps_w_factor():
    """A numeric oversampling without oversampling_w uses it on the w axis too (the
    distributed operator relies on this to rebuild the global geometry)."""
    from radimg.ops.geometry import Field, resolve_geometry

    g = resolve_geometry(Field(256, 256, CELL, CELL), 1e-5, "wstack", 1000, 0.0, 600.0,
                         oversampling=1.5)
    assert g.oversampling == g.oversampling_w == 1.5 and g.W == g.Ww


@pytest.mark.parametrize("npix_x,npix_y", [(64, 64), (65, 63)])
def test_correction_quadrant_mirrors_every_pixel(data, npix_x, npix_y):
    """The operator keeps one quadrant of the image-domain correction and applies it
    mirrored (scale_image): every pixel, at even and odd sizes, equals
    1 / (g(l) g(m) g_w(n - 1 - nshift)) evaluated directly by quadrature."""
    from radimg.kernels.es import es_poly_correction

    cell = CELL * 4
    op = make_operator(data["uvw"], FREQ, npix_x, npix_y, cell, mode="wstack")
    geo = op.geometry
    dx = np.abs(np.arange(npix_x) - npix_x // 2)
    dy = np.abs(np.arange(npix_y) - npix_y // 2)
    gx = es_poly_correction(dx / geo.nxp, geo.W, geo.beta)
    gy = es_poly_correction(dy / geo.nyp, geo.W, geo.beta)
    ll, mm = np.meshgrid(dx * op.cell_x, dy * op.cell_y)
    n = np.sqrt(1.0 - ll**2 - mm**2)
    gw = es_poly_correction((n - 1.0 - geo.nshift) * geo.dw, geo.Ww, geo.betaw)
    ref = 1.0 / (gy[:, None] * gx[None, :] * gw)
    assert np.ptp(gw) > 1e-3  # the w axis' part varies over this field
    np.testing.assert_allclose(op.correction, ref, rtol=1e-12)
    img = data["rng"].normal(size=(npix_y, npix_x))
    np.testing.assert_allclose(op.scale_image(img), img * ref, rtol=1e-12)


@pytest.mark.parametrize("mode,npix_x,npix_y,data_lines", [("wstack", 96, 80, "rows"),
                                                      ("wstack", 95, 81, "scattered"),
                                                      ("wstack", 95, 81, "cols"),
                                                      ("none", 96, 81, "rows"),
                                                      ("none", 96, 81, "cols")])
def test_plane_zeroing_leaves_grid_zero(data, mode, npix_x, npix_y, data_lines):
    """``plane_grid_to_image(..., zero=True)`` (what hdot uses instead of a memset per
    plane) adds the same image as without it (to the bit with the same pass order, to
    rounding with the other) and leaves every cell of the padded grid 0: data in
    contiguous rows (x pass first), in scattered rows (the x pass then transforms every
    row) and in a few columns (the strided y pass first, over them), at even and odd
    image sizes."""
    op = make_operator(data["uvw"], FREQ, npix_x, npix_y, CELL * 3, mode=mode)
    nyp, nxp = op.spec.nyp, op.spec.nxp
    assert nyp > npix_y and nxp > npix_x
    rng = np.random.default_rng(5)
    rows, cols = np.arange(nyp), None
    if data_lines == "rows":
        rows = np.arange(3, nyp - 7)
    elif data_lines == "scattered":
        rows = np.sort(rng.choice(nyp, 12, replace=False))
    else:
        cols = np.concatenate([np.arange(0, 6), np.arange(nxp - 5, nxp)])
    grid = op.new_grid()
    sub = grid[np.ix_(rows, np.arange(nxp) if cols is None else cols)]
    sub = rng.normal(size=sub.shape) + 1j * rng.normal(size=sub.shape)
    grid[np.ix_(rows, np.arange(nxp) if cols is None else cols)] = sub
    order = op._backward_planned(grid.copy(), rows, cols)[1][0]
    assert order == ("cols" if data_lines == "cols" else "rows")
    p = op.nplanes // 2
    ref = op.plane_grid_to_image(grid, p, out=np.zeros((npix_y, npix_x)), overwrite=False,
                                 scaled=False, rows=rows)
    got = op.plane_grid_to_image(grid, p, out=np.zeros((npix_y, npix_x)), scaled=False,
                                 rows=rows, zero=True, cols=cols)
    if order == "rows":
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    assert np.abs(ref).max() > 0
    assert not grid.any()


def test_plane_lines_are_the_touched_tiles(data):
    """Per plane, the grid rows and columns hdot transforms first (``plane_lines``, from
    ``plane_tiles`` for all planes at once) are those of the tiles ``touched_tiles`` says the
    plane's samples touch, and gridding a plane writes nowhere else."""
    from radimg.kernels import gridder as _g

    op = make_operator(data["uvw"], FREQ, 96, 80, CELL * 3, mode="wstack")
    lay = op._layout
    assert op.nplanes > 3
    for p in range(op.nplanes):
        t = _g.touched_tiles(lay, p)
        rows, cols = op.plane_lines(p)
        want_r = np.repeat(t.any(axis=1), np.diff(lay.ybounds))
        want_c = np.repeat(t.any(axis=0), np.diff(lay.xbounds))
        np.testing.assert_array_equal(rows, np.flatnonzero(want_r))
        np.testing.assert_array_equal(cols, np.flatnonzero(want_c))
        g = op.grid_samples(data["vis"], p, weight=data["wgt"])
        assert not g[~want_r].any() and not g[:, ~want_c].any()


@pytest.mark.parametrize("mode", ["wstack", "none"])
def test_forward_pass_order_gives_the_same_data_cells(data, mode):
    """``image_to_plane_grid`` with ``cols`` (what dot passes per plane) may run the FFT's
    passes in the other order: on the cells of ``rows`` x ``cols`` (all degridding reads)
    the grid equals the x-pass-last one to rounding, other columns come back 0, and when
    the data fill few rows but many columns the usual order is kept."""
    op = make_operator(data["uvw"], FREQ, 96, 80, CELL * 3, mode=mode)
    nyp, nxp = op.spec.nyp, op.spec.nxp
    img = np.random.default_rng(2).normal(size=(80, 96))
    p = op.nplanes // 2
    few = np.concatenate([np.arange(0, 6), np.arange(nxp - 5, nxp)])
    rows = np.arange(nyp)
    ref = op.image_to_plane_grid(img, p, rows=rows)
    assert op._pass_order(rows, few)[0] == "cols"
    got = op.image_to_plane_grid(img, p, rows=rows, cols=few)
    np.testing.assert_allclose(got[:, few], ref[:, few], rtol=0,
                               atol=1e-12 * np.abs(ref).max())
    others = np.setdiff1d(np.arange(nxp), few)
    assert not got[:, others].any() and np.abs(ref[:, others]).max() > 0
    assert op._pass_order(np.arange(4), np.arange(nxp))[0] == "rows"


# ------------------------------------------------------------------ Chebyshev w-terms
NARROW_CELL = np.deg2rad(6.0 / 3600.0)  # 256 x 6" = 0.43 deg: |2 pi w (n - 1)| <= 0.05


@pytest.fixture(scope="module")
def narrow():
    """The module's samples on a 0.43 deg field (|w| <= 600 wavelengths as there), point
    sources at the centre and near the corners."""
    rng = np.random.default_rng(11)
    nrow = 1500
    lam = C_LIGHT / FREQ.max()
    uvmax = 0.48 / NARROW_CELL
    uvw = np.empty((nrow, 3))
    uvw[:, :2] = rng.uniform(-uvmax, uvmax, (nrow, 2)) * lam
    uvw[:, 2] = rng.uniform(-600.0, 600.0, nrow) * lam
    wgt = rng.uniform(0.5, 1.5, (nrow, FREQ.size))
    pix = np.array([[128, 128], [3, 5], [254, 249], [10, 253]])
    vis = np.zeros((nrow, FREQ.size), complex)
    for iy, ix in pix:
        l0, m0, _ = pixel_lm(NPIX, NPIX, NARROW_CELL, [[iy, ix]])
        vis += point_source_vis(uvw, FREQ, l0[0], m0[0], 1.0)
    check = np.concatenate([pix, rng.integers(0, NPIX, (100, 2))])
    img = np.zeros((NPIX, NPIX))
    img[rng.integers(0, NPIX, 30), rng.integers(0, NPIX, 30)] = rng.uniform(0.2, 1.0, 30)
    return dict(uvw=uvw, wgt=wgt, vis=vis, check=check, img=img,
                ref=dft_dirty(uvw, FREQ, vis, wgt, NPIX, NPIX, NARROW_CELL, pixels=check),
                vref=dft_predict(uvw, FREQ, img, NARROW_CELL))


@pytest.mark.parametrize("wkernel,precision,eps", [("auto", "double", 1e-5),
                                                   ("auto", "single", 1e-5),
                                                   ("cheb", "double", 1e-8)])
def test_chebyshev_w_terms_vs_dft(narrow, wkernel, precision, eps):
    """On a narrow field the cost model takes the w-term's Chebyshev terms (3 at 1e-5, not
    the ES kernel's 6-7 planes), and both directions meet epsilon against the direct DFT;
    the two directions stay adjoint."""
    op = make_operator(narrow["uvw"], FREQ, NPIX, NPIX, NARROW_CELL, mode="wstack",
                       epsilon=eps, precision=precision, oversampling="auto", wkernel=wkernel)
    g = op.geometry
    assert g.wkernel == "cheb" and op.stats["w_kernel"] == "cheb"
    assert g.nplanes == g.Ww and (g.nplanes == 3 or eps < 1e-5)
    es = make_operator(narrow["uvw"], FREQ, NPIX, NPIX, NARROW_CELL, mode="wstack",
                       epsilon=eps, precision=precision, oversampling="auto", wkernel="es")
    assert g.cost < es.geometry.cost and g.nplanes < es.geometry.nplanes
    chk, ref, vref = narrow["check"], narrow["ref"], narrow["vref"]
    got = op.hdot(narrow["vis"], narrow["wgt"])[chk[:, 0], chk[:, 1]]
    assert np.abs(got - ref).max() <= 0.5 * eps * np.abs(ref).max()
    tol = max(eps, 1e-6 if precision == "single" else 0.0)
    assert np.abs(op.dot(narrow["img"]) - vref).max() <= 0.5 * tol * np.abs(vref).max()
    if precision == "double":
        rng = np.random.default_rng(5)
        x = rng.normal(size=(NPIX, NPIX))
        y = rng.normal(size=narrow["vis"].shape) + 1j * rng.normal(size=narrow["vis"].shape)
        lhs, rhs = np.vdot(op.dot(x), y).real, np.vdot(x, op.hdot(y))
        assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


def test_chebyshev_many_terms_vs_dft():
    """A 5.3 deg field with |w| <= 600 needs ten Chebyshev terms (z ~ 2): forced, they
    still meet epsilon (the amplitude series and monomial taps at high order), while auto
    takes the ES planes there, which cost less."""
    rng = np.random.default_rng(2)
    npix, cell, nrow = 128, np.deg2rad(150.0 / 3600.0), 800
    lam = C_LIGHT / FREQ.max()
    uvw = np.empty((nrow, 3))
    uvw[:, :2] = rng.uniform(-0.45 / cell, 0.45 / cell, (nrow, 2)) * lam
    uvw[:, 2] = rng.uniform(-600.0, 600.0, nrow) * lam
    wgt = np.ones((nrow, FREQ.size))
    pix = np.array([[64, 64], [2, 3], [125, 120]])
    vis = sum(point_source_vis(uvw, FREQ, *pixel_lm(npix, npix, cell, [[iy, ix]])[:2], 1.0)
              for iy, ix in pix)
    vis = np.asarray(vis).reshape(nrow, FREQ.size)
    op = make_operator(uvw, FREQ, npix, npix, cell, mode="wstack", epsilon=1e-5,
                       oversampling="auto", wkernel="cheb")
    assert op.geometry.wkernel == "cheb" and op.nplanes >= 9
    ref = dft_dirty(uvw, FREQ, vis, wgt, npix, npix, cell, pixels=pix)
    got = op.hdot(vis, wgt)[pix[:, 0], pix[:, 1]]
    assert np.abs(got - ref).max() <= 0.5e-5 * np.abs(ref).max()
    auto = make_operator(uvw, FREQ, npix, npix, cell, mode="wstack", epsilon=1e-5,
                         oversampling="auto")
    assert auto.geometry.wkernel == "es"


def test_chebyshev_refused_where_it_cannot_converge(data):
    """The 25.6 deg field with |w| <= 600 (z ~ 50) is beyond wcheb.KMAX terms: a clear
    ValueError when forced; explicit planes or w factor keep the ES kernel."""
    with pytest.raises(ValueError, match="more than 16 terms"):
        make_operator(data["uvw"], FREQ, NPIX, NPIX, CELL, mode="wstack", wkernel="cheb")
    with pytest.raises(ValueError, match="nstacks must be auto"):
        make_operator(data["uvw"], FREQ, NPIX, NPIX, NARROW_CELL, mode="wstack",
                      wkernel="cheb", nstacks=8)
    op = make_operator(data["uvw"], FREQ, NPIX, NPIX, NARROW_CELL, mode="wstack",
                       oversampling="auto", oversampling_w=2.0)
    assert op.geometry.wkernel == "es"


def test_chebyshev_stage_methods_compose(narrow):
    """The stage methods the distributed operator calls (grid_samples +
    plane_grid_to_image, image_to_plane_grid + degrid_samples) sum to hdot and dot with
    Chebyshev terms too (their screens: amplitude and phase per term)."""
    uvw, vis, wgt = narrow["uvw"], narrow["vis"], narrow["wgt"]
    op = make_operator(uvw, FREQ, NPIX, NPIX, NARROW_CELL, mode="wstack",
                       oversampling="auto", nthreads=2)
    assert op.geometry.wkernel == "cheb"
    ref = op.hdot(vis, wgt)
    acc = np.zeros((NPIX, NPIX))
    for p in range(op.nplanes):
        grid = op.grid_samples(vis, p, idx=np.arange(vis.size), weight=wgt)
        op.plane_grid_to_image(grid, p, out=acc)
    assert np.abs(acc - ref).max() <= 1e-12 * np.abs(ref).max()
    vref = op.dot(narrow["img"])
    v = np.zeros_like(vref)
    for p in range(op.nplanes):
        op.degrid_samples(op.image_to_plane_grid(narrow["img"], p), p, out=v)
    assert np.abs(v - vref).max() <= 1e-12 * np.abs(vref).max()


def test_gpu_operator_refuses_chebyshev_geometry(narrow):
    """The CUDA kernels evaluate the ES w-kernel: a Chebyshev geometry is refused before
    any device work (the GPU factories resolve theirs with wkernel='es')."""
    from radimg.gpu.operator import GpuWideFieldOperator

    op = make_operator(narrow["uvw"], FREQ, NPIX, NPIX, NARROW_CELL, mode="wstack",
                       oversampling="auto")
    with pytest.raises(ValueError, match="wkernel='es'"):
        GpuWideFieldOperator(narrow["uvw"], FREQ, op.geometry)
