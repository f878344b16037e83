"""Gridder kernels: brute-force footprint, adjointness, threads, subsets, masks, tiles."""

import numpy as np
import pytest

from radimg.kernels import gridder as g
from radimg.kernels.es import es_kernel, es_parameters

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
    """Direct loop over samples and footprint cells."""
    grid = np.zeros((spec.nyp, spec.nxp), complex)
    for row in range(uvw.shape[0]):
        for ch, f in enumerate(freq / C):
            u, v, w = uvw[row] * f
            val = vis[row, ch]
            if w < 0:
                u, v, w, val = -u, -v, -w, np.conj(val)
            kw = 1.0
            if spec.wstack:
                kw = es_kernel(((w - spec.w0) / spec.dw - p) / (0.5 * spec.Ww), spec.Ww,
                               spec.betaw)
                val = val * np.exp(-2j * np.pi * w * spec.nshift)
            gx, gy = u * spec.xscale, v * spec.yscale
            for jy in range(int(np.floor(gy - spec.W / 2)) - 1, int(np.floor(gy + spec.W / 2)) + 2):
                ky = es_kernel((jy - gy) / (spec.W / 2), spec.W, spec.beta)
                for jx in range(int(np.floor(gx - spec.W / 2)) - 1,
                                int(np.floor(gx + spec.W / 2)) + 2):
                    kx = es_kernel((jx - gx) / (spec.W / 2), spec.W, spec.beta)
                    grid[jy % spec.nyp, jx % spec.nxp] += val * kw * kx * ky
    return grid


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
