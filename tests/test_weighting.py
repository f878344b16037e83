"""Imaging weights (radimg/ops/weighting.py) against a slow pure-Python oracle of WSClean
3.1's definition (ImageWeights: padded half-plane grid, floor cells, Briggs normalisation,
rank filter, samples beyond the grid dropped), plus the pure rank arithmetic that keeps the
weights and the w-stacks the same at any rank count (issue #12)."""

import math

import numpy as np
import pytest

from radimg.ops.weighting import (
    C_LIGHT,
    RANK_FILTER_LEVEL,
    RANK_FILTER_SIZE,
    density_grid,
    drop_beyond_grid,
    imaging_weights,
    rank_filter,
    taper_sigma_uv,
    weight_factors,
    weight_grid,
)

pytestmark = pytest.mark.unit

NPIX = 40
CELL = math.radians(4.0 / 60.0)  # 4 arcmin: the grid holds |u|, |v| < 1/(2 cell) ~ 430 lambda
FREQ = np.array([1.0e8, 1.1e8, 1.2e8])


# ---------------------------------------------------------------------------- the oracle
def _padded(n, padding):
    p = math.ceil(n * padding)
    return p + (4 - p % 4) % 4


def _oracle_cell(um, vm, f, nx, ny, cell):
    lam = C_LIGHT / f
    u, v = um / lam, vm / lam
    if v < 0:
        u, v = -u, -v
    if not (math.isfinite(u) and math.isfinite(v)):
        return None
    x = math.floor(u * nx * cell + nx // 2)
    y = math.floor(v * ny * cell)
    return (y, x) if (0 <= x < nx and 0 <= y < ny // 2) else None


def _oracle_rank_filter(g, level, size):
    """WSClean's ImageWeights::RankFilter and windowMean, loop for loop."""
    if level < 1.0:
        return g.copy()
    h, w = g.shape
    d = size // 2
    out = g.copy()
    for y in range(h):
        for x in range(w):
            val = g[y, x]
            if val == 0.0:
                continue
            x1 = 0 if x <= d else x - d
            y1 = 0 if y <= d else y - d
            x2 = w if x + d >= w else x + d
            y2 = h if y + d >= h else y + d
            s, n = 0.0, 0
            for yi in range(y1, y2):
                for xi in range(x1, x2):
                    if g[yi, xi] != 0.0:
                        s += g[yi, xi]
                        n += 1
            if n and val > s / n * level:
                out[y, x] = s / n * level
    return out


def oracle(
    uvw,
    freq,
    weight,
    scheme,
    robust=0.0,
    npix=NPIX,
    cell=CELL,
    padding=1.2,
    level=RANK_FILTER_LEVEL,
    size=RANK_FILTER_SIZE,
):
    """(imaging weights, density grid, samples beyond) of WSClean 3.1's definition."""
    nx = ny = _padded(npix, padding)
    dens = np.zeros((ny // 2, nx))
    cells = {}
    beyond = 0
    for r in range(uvw.shape[0]):
        for c in range(freq.size):
            if weight[r, c] == 0:
                continue
            k = _oracle_cell(uvw[r, 0], uvw[r, 1], freq[c], nx, ny, cell)
            cells[r, c] = k
            if k is None:
                beyond += 1
            else:
                dens[k] += float(weight[r, c])
    if scheme == "uniform":
        g = np.where(dens != 0, 1.0 / np.where(dens != 0, dens, 1.0), 0.0)
    elif scheme == "briggs":
        s2 = (5.0 * 10.0 ** (-robust)) ** 2 / ((dens * dens).sum() / dens.sum())
        g = 1.0 / (1.0 + dens * s2)
    else:
        g = np.where(dens != 0, 1.0, 0.0)
    g = _oracle_rank_filter(g, level, size)
    out = np.zeros(weight.shape)
    for (r, c), k in cells.items():
        if k is not None:
            out[r, c] = float(weight[r, c]) * g[k]
    return out, dens, beyond


def _data(seed=1, nrow=600, flag_frac=0.1, beyond_frac=0.15):
    """A dense core (many samples per cell, lone samples among them for the rank filter),
    a sparse outer part, some rows beyond the grid, both signs of v, flags."""
    rng = np.random.default_rng(seed)
    lam = C_LIGHT / FREQ[-1]
    umax = 0.5 / CELL * lam  # metres at the highest frequency
    uvw = np.empty((nrow, 3))
    core = rng.random(nrow) < 0.6
    uvw[:, :2] = np.where(
        core[:, None],
        rng.normal(0.0, 0.08 * umax, (nrow, 2)),
        rng.uniform(-0.95 * umax, 0.95 * umax, (nrow, 2)),
    )
    far = rng.random(nrow) < beyond_frac
    uvw[far, :2] = (
        rng.uniform(1.05, 1.8, (far.sum(), 2)) * umax * rng.choice([-1, 1], (far.sum(), 2))
    )
    uvw[:, 2] = rng.normal(0.0, 50.0, nrow)
    wt = rng.uniform(0.5, 2.0, (nrow, FREQ.size))
    wt[rng.random(wt.shape) < flag_frac] = 0.0
    return uvw, wt


def _kw(**extra):
    return dict(npix_x=NPIX, npix_y=NPIX, cell_rad=CELL, **extra)


# ---------------------------------------------------------------------------- geometry
@pytest.mark.parametrize(
    "npix,padded", [(512, 616), (1024, 1232), (2048, 2460), (100, 120), (33, 40), (40, 48)]
)
def test_weight_grid_is_wscleans_padded_grid(npix, padded):
    # WSClean: ceil(npix * 1.2), rounded up to a multiple of 4 (settings.cpp)
    g = weight_grid(npix, npix, CELL)
    assert (g.nx, g.ny) == (padded, padded) and g.shape == (padded // 2, padded)
    du = 1.0 / (padded * CELL)
    assert g.uv_cell_lambda == pytest.approx((du, du), rel=1e-15)
    # the extent does not depend on the padding: +-1/(2 cell), as the imaging grid's
    assert g.uv_max_lambda == pytest.approx((0.5 / CELL, 0.5 / CELL), rel=1e-15)
    assert weight_grid(npix, npix, CELL, padding=1.0).uv_max_lambda == g.uv_max_lambda


def test_cells_have_lower_edges_on_multiples_and_twins_share_them():
    g = weight_grid(NPIX, NPIX, CELL)
    du = g.uv_cell_lambda[0]
    lam = C_LIGHT / FREQ[0]
    one = np.ones((1, 1))
    # just above / below a cell edge (u = 3 du): cells 3 and 2 right of the centre column
    for frac, col in ((3.0 + 1e-9, 3), (3.0 - 1e-9, 2)):
        uvw = np.array([[frac * du * lam, 0.5 * du * lam, 0.0]])
        d = density_grid(uvw, FREQ[:1], one, NPIX, NPIX, CELL)
        assert d[0, g.nx // 2 + col] == 1.0 and d.sum() == 1.0
    # a sample and its Hermitian twin (-u, -v) land in the same half-plane cell
    rng = np.random.default_rng(3)
    uv = rng.uniform(-0.4, 0.4, (200, 2)) / CELL * lam
    uvw = np.concatenate([np.c_[uv, np.zeros(200)], np.c_[-uv, np.zeros(200)]])
    d = density_grid(uvw, FREQ[:1], np.ones((400, 1)), NPIX, NPIX, CELL)
    d1 = density_grid(uvw[:200], FREQ[:1], np.ones((200, 1)), NPIX, NPIX, CELL)
    np.testing.assert_array_equal(d, 2.0 * d1)


# ---------------------------------------------------------------------------- vs oracle
@pytest.mark.parametrize(
    "scheme,robust",
    [
        ("natural", 0.0),
        ("uniform", 0.0),
        ("briggs", -2.0),
        ("briggs", -1.0),
        ("briggs", 0.0),
        ("briggs", 1.0),
        ("briggs", 2.0),
    ],
)
@pytest.mark.parametrize("level", [RANK_FILTER_LEVEL, 0.0, 1.5])
def test_weights_equal_the_oracle(scheme, robust, level):
    uvw, wt = _data()
    want, dens, beyond = oracle(uvw, FREQ, wt, scheme, robust, level=level)
    got = imaging_weights(
        uvw, FREQ, wt, scheme=scheme, robust=robust, rank_filter_level=level, **_kw()
    )
    assert beyond > 100 and dens.sum() > 0  # the data reach past the grid
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert np.all(got[wt == 0] == 0)
    np.testing.assert_allclose(
        density_grid(uvw, FREQ, wt, NPIX, NPIX, CELL), dens, rtol=1e-13, atol=0
    )


def _lattice_data():
    """Dense cells (20 samples each) filling a 24 x 32 block of the half plane, with lone
    samples in some cells: the case the rank filter is for. (Briggs factors are 1 in empty
    cells, and WSClean's window mean counts those, so Briggs clips only where the window
    is full.)"""
    g = weight_grid(NPIX, NPIX, CELL)
    du = g.uv_cell_lambda[0]
    lam = C_LIGHT / FREQ[0]
    pts = []
    for iy in range(g.ny // 2):
        for ix in range(-16, 16):
            n = 1 if (3 * iy + ix) % 11 == 0 else 20
            pts += [((ix + 0.5) * du * lam, (iy + 0.5) * du * lam)] * n
    uvw = np.c_[np.array(pts), np.zeros(len(pts))]
    return uvw, np.ones((len(pts), 1))


@pytest.mark.parametrize(
    "scheme,robust,clips",
    [
        ("natural", 0.0, False),
        ("uniform", 0.0, True),
        ("briggs", -2.0, True),
        ("briggs", 0.0, True),
        ("briggs", 2.0, False),
    ],
)
def test_rank_filter_caps_lone_cells_beside_dense_ones(scheme, robust, clips):
    uvw, wt = _lattice_data()
    want, _, _ = oracle(uvw, FREQ[:1], wt, scheme, robust)
    got = imaging_weights(uvw, FREQ[:1], wt, scheme=scheme, robust=robust, **_kw())
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    nofilt = imaging_weights(
        uvw, FREQ[:1], wt, scheme=scheme, robust=robust, rank_filter_level=0.0, **_kw()
    )
    _, inv, cnt = np.unique(uvw, axis=0, return_inverse=True, return_counts=True)
    lone = cnt[inv.ravel()] == 1
    changed = ~np.isclose(got, nofilt, rtol=1e-12, atol=0)[:, 0]
    assert changed.any() == clips
    assert not (changed & ~lone).any()  # only lone samples are capped
    if clips:
        assert np.all(got[changed] < nofilt[changed])


def test_float32_weights_keep_their_dtype_and_values():
    uvw, wt = _data(seed=4)
    want, _, _ = oracle(uvw, FREQ, wt.astype(np.float32), "briggs", 0.5)
    got = imaging_weights(uvw, FREQ, wt.astype(np.float32), scheme="briggs", robust=0.5, **_kw())
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-7)


def test_rank_filter_caps_a_lone_high_value_at_level_times_the_window_mean():
    g = np.zeros((20, 40))
    g[2:12, 5:25] = 1.0
    g[6, 14] = 100.0
    out = rank_filter(g, 3.0, 16)
    # window of (6, 14): rows [0, 14), columns [6, 22): 8 x 16 ones minus one, plus 100
    inside = g[0:14, 6:22]
    mean = inside[inside != 0].mean()
    assert out[6, 14] == pytest.approx(3.0 * mean, rel=1e-15)
    out[6, 14] = g[6, 14]
    np.testing.assert_array_equal(out, g)  # nothing else changes
    np.testing.assert_array_equal(rank_filter(g, 0.5, 16), g)  # level < 1: off
    np.testing.assert_array_equal(rank_filter(g, 3.0, 1), g)  # empty window: off
    np.testing.assert_array_equal(rank_filter(g, 3.0, 16), _oracle_rank_filter(g, 3.0, 16))


@pytest.mark.parametrize("size", [2, 5, 16, 31])
def test_rank_filter_equals_wscleans_window_loops(size):
    rng = np.random.default_rng(size)
    g = rng.exponential(1.0, (23, 37)) ** 3
    g[rng.random(g.shape) < 0.5] = 0.0
    np.testing.assert_allclose(
        rank_filter(g, 2.0, size), _oracle_rank_filter(g, 2.0, size), rtol=1e-13, atol=0
    )


def test_uniform_without_rank_filter_gives_unit_total_weight_per_occupied_cell():
    uvw, wt = _data(beyond_frac=0.0)
    out = imaging_weights(uvw, FREQ, wt, scheme="uniform", rank_filter_level=0.0, **_kw())
    g = weight_grid(NPIX, NPIX, CELL)
    tot = np.zeros(g.shape)
    for r, c in zip(*np.nonzero(wt), strict=True):
        k = _oracle_cell(uvw[r, 0], uvw[r, 1], FREQ[c], g.nx, g.ny, CELL)
        tot[k] += out[r, c]
    occ = tot > 0
    np.testing.assert_allclose(tot[occ], 1.0, rtol=1e-12)


def test_briggs_limits():
    uvw, wt = _data()
    m = (wt > 0) & (imaging_weights(uvw, FREQ, wt, scheme="natural", **_kw()) > 0)
    kw = dict(rank_filter_level=0.0, **_kw())
    uni = imaging_weights(uvw, FREQ, wt, scheme="uniform", **kw)
    lo = imaging_weights(uvw, FREQ, wt, scheme="briggs", robust=-2.0, **kw)
    hi = imaging_weights(uvw, FREQ, wt, scheme="briggs", robust=2.0, **kw)
    r = lo[m] / uni[m]
    assert r.std() / r.mean() < 1e-3  # robust -2: uniform up to a constant
    q = hi[m] / wt[m]
    assert np.max(np.abs(q / q.mean() - 1.0)) < 0.02  # robust +2: natural up to a constant


# ---------------------------------------------------------------------------- beyond the grid
def test_samples_beyond_the_grid_are_dropped_and_counted():
    uvw, wt = _data()
    _, _, beyond = oracle(uvw, FREQ, wt, "natural")
    g = weight_grid(NPIX, NPIX, CELL)
    rows = sum(
        any(
            wt[r, c] != 0 and _oracle_cell(uvw[r, 0], uvw[r, 1], FREQ[c], g.nx, g.ny, CELL) is None
            for c in range(FREQ.size)
        )
        for r in range(uvw.shape[0])
    )
    w = wt.copy()
    assert drop_beyond_grid(uvw, FREQ, w, NPIX, NPIX, CELL, drop=False) == (beyond, rows)
    np.testing.assert_array_equal(w, wt)  # drop=False only counts
    assert drop_beyond_grid(uvw, FREQ, w, NPIX, NPIX, CELL) == (beyond, rows)
    assert np.count_nonzero(wt) - np.count_nonzero(w) == beyond
    assert drop_beyond_grid(uvw, FREQ, w, NPIX, NPIX, CELL) == (0, 0)  # idempotent
    # every scheme gives them weight 0, natural included (WSClean's grid lookup returns 0)
    for scheme in ("natural", "uniform", "briggs"):
        a = imaging_weights(uvw, FREQ, wt, scheme=scheme, **_kw())
        np.testing.assert_array_equal(a, imaging_weights(uvw, FREQ, w, scheme=scheme, **_kw()))
        assert np.all(a[(wt != 0) & (w == 0)] == 0) and np.all(a[w != 0] > 0)


def test_drop_needs_a_writeable_float_array():
    uvw, wt = _data(nrow=10)
    with pytest.raises(ValueError, match="writeable"):
        drop_beyond_grid(uvw, FREQ, wt.astype(np.int64), NPIX, NPIX, CELL)
    ro = wt.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        drop_beyond_grid(uvw, FREQ, ro, NPIX, NPIX, CELL)


def test_nonfinite_uvw_is_beyond_the_grid_not_a_crash():
    uvw, wt = _data(nrow=20, flag_frac=0.0)
    uvw[3] = np.nan
    uvw[5, 0] = np.inf
    n, rows = drop_beyond_grid(uvw, FREQ, wt.copy(), NPIX, NPIX, CELL, drop=False)
    assert rows >= 2 and n >= 2 * FREQ.size
    out = imaging_weights(uvw, FREQ, wt, scheme="briggs", **_kw())
    assert np.all(out[[3, 5]] == 0) and np.all(np.isfinite(out))


# ---------------------------------------------------------------------------- rank counts
def test_density_of_parts_sums_to_serial_and_gives_the_same_weights():
    """Serial twin of the pipeline's Allreduce: the sum over row blocks equals the whole,
    and each block weighted with the global density equals its rows of the serial weights
    bitwise, the rank filter included."""
    uvw, wt = _data()
    whole = density_grid(uvw, FREQ, wt, NPIX, NPIX, CELL)
    blocks = [(0, 100), (100, 347), (347, 600)]
    parts = sum(density_grid(uvw[a:b], FREQ, wt[a:b], NPIX, NPIX, CELL) for a, b in blocks)
    np.testing.assert_allclose(parts, whole, rtol=1e-13, atol=0)
    for scheme in ("uniform", "briggs"):
        serial = imaging_weights(uvw, FREQ, wt, scheme=scheme, robust=0.5, **_kw())
        for a, b in blocks:
            got = imaging_weights(
                uvw[a:b], FREQ, wt[a:b], scheme=scheme, robust=0.5, density=whole, **_kw()
            )
            np.testing.assert_array_equal(got, serial[a:b])


@pytest.mark.parametrize("tot,max_samples", [(73810, 20000), (20000, 20000), (7, 3), (100, 1)])
@pytest.mark.parametrize("nranks", [1, 2, 3, 4, 7])
def test_stack_subsample_is_the_same_at_any_rank_count(tot, max_samples, nranks):
    """Issue #12: the w-stack cost model's subsample (radimg.parallel.operator) must not
    depend on how the rows are dealt to ranks; a per-rank random draw made 84, 91 and 98
    stacks at 1, 2 and 3 ranks on the real MWA MS at 512 x 240 arcsec."""
    from radimg.parallel.operator import subsample_slice

    glob = np.arange(tot)
    serial = glob[subsample_slice(0, tot, max_samples)]
    assert serial.size <= max_samples and (tot <= max_samples) == (serial.size == tot)
    cuts = np.sort(np.random.default_rng(nranks).integers(0, tot + 1, nranks - 1))
    bounds = np.concatenate([[0], cuts, [tot]])
    got = np.concatenate(
        [
            glob[a:b][subsample_slice(a, tot, max_samples)]
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
    )
    np.testing.assert_array_equal(got, serial)


# ---------------------------------------------------------------------------- misc
def test_natural_is_the_input_weight_inside_the_grid():
    uvw, wt = _data(beyond_frac=0.0)
    out = imaging_weights(uvw, FREQ, wt.astype(np.float32), scheme="natural", **_kw())
    assert out.dtype == np.float32
    inside = np.array(
        [
            [_oracle_cell(uvw[r, 0], uvw[r, 1], f, 48, 48, CELL) is not None for f in FREQ]
            for r in range(uvw.shape[0])
        ]
    )
    np.testing.assert_array_equal(out, np.where(inside, wt, 0).astype(np.float32))


def test_weight_factors_natural_is_refused():
    with pytest.raises(ValueError, match="uniform or briggs"):
        weight_factors(np.ones((2, 4)), "natural")


def test_taper_convention():
    """Image-domain FWHM theta <-> exp(-rho^2 / (2 sigma_uv^2)), sigma_uv = 1/(2 pi sigma_l)."""
    theta = 600.0
    sig = taper_sigma_uv(theta)
    sigma_l = math.radians(theta / 3600.0) / (2 * math.sqrt(2 * math.log(2)))
    assert sig == pytest.approx(1.0 / (2 * math.pi * sigma_l))
    # At rho = sigma_uv (inside the grid) the taper is exp(-1/2).
    assert sig < 0.5 / CELL
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
    with pytest.raises(ValueError, match="weight grid's shape"):
        imaging_weights(uvw, FREQ, wt, scheme="uniform", density=np.ones((NPIX, NPIX)), **_kw())
    with pytest.raises(ValueError, match="padding"):
        weight_grid(NPIX, NPIX, CELL, padding=0.5)
