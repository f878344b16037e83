"""Gridder kernels: brute-force footprint, adjointness, threads, subsets, masks, tiles."""

import numpy as np
import pytest

from radimg.kernels import gridder as g
from radimg.kernels.es import (
    es_correction,
    es_kernel,
    es_parameters,
    es_poly_correction,
    es_poly_error,
    es_poly_taps,
)

pytestmark = pytest.mark.unit
C = g.C_LIGHT


def _spec(wstack, nxp=64, nyp=48, cell=0.01, wmax=50.0):
    W, beta = es_parameters(1e-5)
    if not wstack:
        return g.GridSpec(nxp=nxp, nyp=nyp, W=W, beta=beta, xscale=cell * nxp, yscale=-cell * nyp)
    dw = 3.0
    nplanes = int(np.ceil(wmax / dw)) + W
    return g.GridSpec(nxp=nxp, nyp=nyp, W=W, beta=beta, xscale=cell * nxp, yscale=-cell * nyp,
                      nplanes=nplanes, Ww=W, betaw=beta, w0=-(0.5 * W - 0.5) * dw, dw=dw,
                      nshift=-0.01)


def _data(seed=0, nrow=300, cell=0.01, wmax=50.0):
    rng = np.random.default_rng(seed)
    freq = np.array([1.0e8, 1.4e8])
    uvmax = 0.5 / cell  # up to the padded grid edge: exercises the cyclic wrap
    uvw = rng.uniform(-1, 1, (nrow, 3)) * np.array([uvmax, uvmax, wmax]) * C / freq.max()
    vis = rng.normal(size=(nrow, 2)) + 1j * rng.normal(size=(nrow, 2))
    return rng, uvw, freq, vis


def _brute_grid(spec, uvw, freq, vis, p):
    """Direct loop over samples and footprint cells, kernel weights from the reference
    (numpy) evaluation of the gridder's piecewise-polynomial kernel."""
    grid = np.zeros((spec.nyp, spec.nxp), complex)
    for row in range(uvw.shape[0]):
        for ch, f in enumerate(freq / C):
            u, v, w = uvw[row] * f
            val = vis[row, ch]
            if w < 0:
                u, v, w, val = -u, -v, -w, np.conj(val)
            kw = 1.0
            if spec.wstack:
                q0, kws = es_poly_taps((w - spec.w0) / spec.dw, spec.Ww, spec.betaw)
                a = p - q0[0]
                kw = kws[0, a] if 0 <= a < spec.Ww else 0.0
                val = val * np.exp(-2j * np.pi * w * spec.nshift)
            jx0, kx = es_poly_taps(u * spec.xscale, spec.W, spec.beta)
            jy0, ky = es_poly_taps(v * spec.yscale, spec.W, spec.beta)
            for a in range(spec.W):
                for b in range(spec.W):
                    grid[(jy0[0] + a) % spec.nyp, (jx0[0] + b) % spec.nxp] += (
                        val * kw * kx[0, b] * ky[0, a])
    return grid


def test_poly_kernel_matches_es():
    """The piecewise polynomial follows the ES kernel far inside the gridding error, and
    its correction is its own Fourier transform."""
    for W in (4, 7, 11, 16):
        beta = 2.3 * W
        g = np.random.default_rng(W).uniform(-50, 50, 500)
        f0, taps = es_poly_taps(g, W, beta)
        x = (f0[:, None] + np.arange(W)[None, :] - g[:, None]) / (0.5 * W)
        exact = es_kernel(x, W, beta)
        assert np.abs(taps - exact).max() < 1e-2 * np.exp(-0.4 * beta) + 1e-14
        nu = np.linspace(-0.3, 0.3, 7)
        np.testing.assert_allclose(es_poly_correction(nu, W, beta), es_correction(nu, W, beta),
                                   rtol=1e-3 * np.exp(-0.2 * beta), atol=0)
    W, beta = es_parameters(1e-5, 2.0)
    assert es_poly_error(W, beta, 2.0, nx=65, nt=49) <= 1.05e-5


@pytest.mark.parametrize("wstack", [False, True])
def test_grid_matches_bruteforce(wstack):
    _, uvw, freq, vis = _data(nrow=40)
    spec = _spec(wstack)
    lay = g.make_layout(uvw, freq, spec)
    for p in ([0] if not wstack else [0, 3, spec.nplanes - 1]):
        got = g.grid_plane(lay, spec, uvw, freq, vis, p)
        ref = _brute_grid(spec, uvw, freq, vis, p)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max() + 1e-300)


@pytest.mark.parametrize("wstack", [False, True])
def test_degrid_is_adjoint_of_grid(wstack):
    rng, uvw, freq, vis = _data()
    spec = _spec(wstack)
    lay = g.make_layout(uvw, freq, spec)
    G = rng.normal(size=(spec.nyp, spec.nxp)) + 1j * rng.normal(size=(spec.nyp, spec.nxp))
    for p in ([0] if not wstack else [2, 7]):
        # Reflection conjugates, so the pair is adjoint for the real inner product.
        lhs = np.vdot(G, g.grid_plane(lay, spec, uvw, freq, vis, p)).real
        rhs = np.vdot(g.degrid_plane(lay, spec, uvw, freq, G, p), vis).real
        assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


def test_threads_identical_and_single_precision():
    _, uvw, freq, vis = _data(nrow=2000)
    spec = _spec(True, nxp=96, nyp=128)
    lay = g.make_layout(uvw, freq, spec, nthreads=2)
    a = g.grid_plane(lay, spec, uvw, freq, vis, 4, nthreads=1)
    b = g.grid_plane(lay, spec, uvw, freq, vis, 4, nthreads=2)
    np.testing.assert_array_equal(a, b)  # tiles fix the summation order
    c = g.grid_plane(lay, spec, uvw, freq, vis.astype(np.complex64), 4, nthreads=2)
    assert c.dtype == np.complex64
    assert np.abs(c - a).max() <= 1e-6 * np.abs(a).max()
    va = g.degrid_plane(lay, spec, uvw, freq, a, 4, nthreads=1)
    vb = g.degrid_plane(lay, spec, uvw, freq, a, 4, nthreads=2)
    np.testing.assert_array_equal(va, vb)


def test_subsets_and_mask():
    rng, uvw, freq, vis = _data(nrow=500)
    spec = _spec(True)
    n = vis.size
    perm = rng.permutation(n)
    A, B = perm[: n // 3], perm[n // 3 :]
    full = g.grid_plane(g.make_layout(uvw, freq, spec), spec, uvw, freq, vis, 5)
    part = g.grid_plane(g.make_layout(uvw, freq, spec, idx=A), spec, uvw, freq, vis, 5)
    g.grid_plane(g.make_layout(uvw, freq, spec, idx=B), spec, uvw, freq, vis, 5, out=part)
    np.testing.assert_allclose(part, full, rtol=0, atol=1e-12 * np.abs(full).max())

    mask = rng.uniform(size=vis.shape) > 0.3
    lay = g.make_layout(uvw, freq, spec, mask=mask)
    assert lay.nsamples == mask.sum()
    ref = g.grid_plane(g.make_layout(uvw, freq, spec), spec, uvw, freq, vis * mask, 5)
    got = g.grid_plane(lay, spec, uvw, freq, vis, 5)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    out = g.degrid_plane(lay, spec, uvw, freq, ref, 5)
    assert np.all(out[~mask] == 0)


@pytest.mark.parametrize("n,nslots,nplanes", [(0, 4, 1), (1, 1, 1), (5000, 37, 9),
                                                (200_000, 4096, 20)])
def test_layout_order_is_the_stable_sort_of_slot_then_plane(n, nslots, nplanes):
    """make_layout's counting passes give numpy's stable argsort of the (slot, first plane)
    key exactly, ties in sample order (many ties at these sizes)."""
    rng = np.random.default_rng(n)
    slot = rng.integers(0, nslots, n).astype(np.int64)
    p0 = rng.integers(0, nplanes, n).astype(np.int32)
    got = g._order_by_slot_plane(slot, p0, nslots, nplanes)
    np.testing.assert_array_equal(got, np.argsort(slot * nplanes + p0, kind="stable"))


def test_touched_tiles_cover_footprints():
    rng, uvw, freq, vis = _data(nrow=60)
    spec = _spec(True, nxp=128, nyp=96)
    lay = g.make_layout(uvw, freq, spec, idx=rng.choice(vis.size, 30, replace=False))
    for p in range(0, spec.nplanes, 5):
        grid = g.grid_plane(lay, spec, uvw, freq, vis, p)
        tiles = g.touched_tiles(lay, p)
        ty = np.searchsorted(lay.ybounds, np.arange(spec.nyp), side="right") - 1
        tx = np.searchsorted(lay.xbounds, np.arange(spec.nxp), side="right") - 1
        covered = tiles[ty[:, None], tx[None, :]]
        assert not np.any(grid[~covered])
    assert np.all(np.diff(lay.ybounds) >= spec.W) and (lay.ybounds.size - 1) % 2 == 0


# ----------------------------------------------------------------------------- compile-time W
def _vector_ops(ir):
    """Floating-point vector operations ``fmul/fadd <N x double|float>`` (N >= 4) in LLVM IR."""
    import re

    return {(op, int(n), t) for op, n, t in re.findall(
        r"\b(fmul|fadd)\b (?:\w+ )*<(\d+) x (double|float)>", ir) if int(n) >= 4}


def _serial_kernels(W, Ww, dt):
    """The W-specialised kernels compiled here without threads (a ``prange`` body of the
    threaded variant is a separate function that ``inspect_llvm`` does not show; a variant
    from the disk cache has no IR), run once so numba compiles them for ``dt``."""
    from radimg.kernels.es import es_poly_even_odd

    beta = 2.3 * W
    even, odd = es_poly_even_odd(W, beta)
    gk, dk = g.sorted_kernels(W, Ww, even.shape[0], odd.shape[0], parallel=False, cache=False)
    spec = g.GridSpec(nxp=64, nyp=48, W=W, beta=beta, xscale=0.64, yscale=-0.48)
    rng, uvw, freq, vis = _data(seed=2, nrow=40)
    lay = g.make_layout(uvw, freq, spec)
    coords, vals = g.prepare_samples(lay, spec, uvw, freq, vis.astype(dt))
    coef, coefw = g._coefs(spec)
    grid = np.zeros((spec.nyp, spec.nxp), dtype=dt)
    gk(coords, vals, lay.p0, lay.slot_start, lay.slot_pmin, lay.slot_pmax, lay.colour_start, 0,
       coef, coefw, g._real_view(grid))
    acc = np.zeros(lay.nsamples, dtype=dt)
    dk(coords, g._real_view(grid), lay.p0, lay.slot_start, lay.slot_pmin, lay.slot_pmax, 0,
       coef, coefw, acc)
    ref = g.grid_plane(lay, spec, uvw, freq, vis.astype(dt))  # the threaded variant
    np.testing.assert_allclose(grid, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    return gk, dk


@pytest.mark.parametrize("W", [8, 9, 12])
def test_specialised_kernels_vectorise(W):
    """Issue #13 item 3: the support-specialised kernels compile their kernel rows to vector
    arithmetic (<N x double>, N >= 4, e.g. vmulpd/vaddpd on ymm/zmm): the degrid kernel at
    every W, the grid kernel from W = 9 on (rows of W <= 8 are unrolled instead, measured
    2.5-3x faster there: gridder.sorted_kernels' CONST_ROWS)."""
    gk, dk = _serial_kernels(W, 1, np.complex128)
    for k in ((gk, dk) if W >= 9 else (dk,)):
        ops = _vector_ops(k.inspect_llvm(k.signatures[0]))
        assert ("fmul", 8, "double") in ops or ("fmul", 4, "double") in ops, ops
        assert any(op == "fadd" for op, _, _ in ops), ops


def test_vector_check_can_fail():
    """The check above is not vacuous: a loop whose trip count is a compile-time constant
    (unrolled first, then left scalar: what the kernel rows did before) shows no vector ops,
    nor does a loop with a serial dependence."""
    import numba

    @numba.njit
    def scalar_chain(a):
        s = 0.0
        for i in range(a.size):
            s = s * 0.5 + a[i]
        return s

    scalar_chain(np.ones(8))
    assert not _vector_ops(scalar_chain.inspect_llvm(scalar_chain.signatures[0]))

    @numba.njit
    def unrolled_rows(gr, k2, jys):
        for j in jys:
            for q in range(18):
                gr[j, q] += 2.0 * k2[q]

    unrolled_rows(np.zeros((4, 20)), np.ones(18), np.arange(3))
    assert not _vector_ops(unrolled_rows.inspect_llvm(unrolled_rows.signatures[0]))


def test_specialised_variants_per_support():
    """One compiled variant per (W, Ww, degrees), reused (memoised, not rebuilt per call)."""
    a = g.sorted_kernels(8, 1, 5, 4)
    assert g.sorted_kernels(8, 1, 5, 4) is a
    assert g.sorted_kernels(9, 1, 5, 4) is not a


@pytest.mark.parametrize("shape", [(12, 16), (13, 15)])
@pytest.mark.parametrize("padded", [False, True])
def test_chirp_on_the_fly_equals_stored_screen(shape, padded):
    """chirp_adjoint_w / chirp_forward_w (screen and n - 1 made row by row, no arrays) give
    the same numbers, to the last bit, as chirp_adjoint / chirp_forward with the stored
    screen of :func:`phasor`, at even and odd sizes and into padded grids; and the screen
    is not trivial (a wrong sign or row would differ)."""
    ny, nx = shape
    rng = np.random.default_rng(3)
    geo = (0.02, 0.025, -0.003)  # cell_x, cell_y, nshift
    cq = g.quadrant_c(ny, nx, *geo)
    w = 37.3
    ph = g.phasor(cq, w)
    assert np.abs(ph.imag).max() > 0.5
    gy, gx = (ny + 7, nx + 5) if padded else (ny, nx)
    fg = rng.normal(size=(gy, gx)) + 1j * rng.normal(size=(gy, gx))
    a = rng.normal(size=(ny, nx))
    b = a.copy()
    g.chirp_adjoint(fg, ph, a)
    g.chirp_adjoint_w(fg, *geo, w, b)
    np.testing.assert_array_equal(a, b)
    img = rng.normal(size=(ny, nx))
    o1 = np.full((gy, gx), 9 + 9j)
    o2 = np.full((gy, gx), 7 + 7j)
    g.chirp_forward(img, ph, o1)
    g.chirp_forward_w(img, *geo, w, o2)
    np.testing.assert_array_equal(o1, o2)
    # the screen matters: another w gives another image
    c = rng.normal(size=(ny, nx))
    d = c.copy()
    g.chirp_adjoint_w(fg, *geo, w + 0.3, d)
    g.chirp_adjoint(fg, ph, c)
    assert np.abs(c - d).max() > 1e-3
