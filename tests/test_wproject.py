"""w-stacking + w-projection hybrid operator (radimg/ops/wproject.py) against the DFT oracle.

Tiny problem: 2000 rows x 2 channels, 128^2 pixels over a 25 deg field, |w| <= 600 lambda.
"""

import numpy as np
import pytest
from reference import C_LIGHT, dft_dirty, dft_predict

from radimg.ops.geometry import Field, wproject_geometry
from radimg.ops.operator import make_operator
from radimg.ops.wproject import WProjectOperator, choose_nstacks, kmeans_w_local

pytestmark = pytest.mark.unit

NPIX = 128
FOV = np.deg2rad(25.0)
CELL = FOV / NPIX
FREQ = np.array([1.0e8, 1.1e8])
NSTACKS = 48  # residual |dw| <= ~6 lambda: small tables, fast set-up


def _uvw(rng, nrow, wmax):
    lam = C_LIGHT / FREQ.max()
    umax = 0.45 / CELL
    uvw = np.empty((nrow, 3))
    uvw[:, 0] = rng.uniform(-umax, umax, nrow) * lam
    uvw[:, 1] = rng.uniform(-umax, umax, nrow) * lam
    uvw[:, 2] = rng.uniform(-wmax, wmax, nrow) * lam
    return uvw


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    nrow = 2000
    uvw = _uvw(rng, nrow, 600.0)
    vis = rng.normal(size=(nrow, FREQ.size)) + 1j * rng.normal(size=(nrow, FREQ.size))
    wgt = rng.uniform(0.5, 1.0, (nrow, FREQ.size))
    pix = np.stack([rng.integers(0, NPIX, 200), rng.integers(0, NPIX, 200)], axis=1)
    corners = [[0, 0], [0, NPIX - 1], [NPIX - 1, 0], [NPIX - 1, NPIX - 1], [NPIX // 2, NPIX // 2]]
    pix = np.concatenate([pix, corners])
    ref = dft_dirty(uvw, FREQ, vis, wgt, NPIX, NPIX, CELL, pixels=pix)
    img = np.zeros((NPIX, NPIX))
    for iy, ix in pix[:30]:
        img[iy, ix] = rng.normal()
    img[0, 0] = 1.0  # a corner source: largest n - 1
    vref = dft_predict(uvw, FREQ, img, CELL)
    return dict(uvw=uvw, vis=vis, wgt=wgt, pix=pix, ref=ref, img=img, vref=vref)


@pytest.fixture(scope="module")
def op_double(data):
    return make_operator(data["uvw"], FREQ, NPIX, NPIX, CELL, mode="wstack-wproject", epsilon=1e-5,
                            nstacks=NSTACKS, precision="double", nthreads=2)


@pytest.fixture(scope="module")
def op_single(data):
    return make_operator(data["uvw"], FREQ, NPIX, NPIX, CELL, mode="wstack-wproject", epsilon=1e-4,
                            nstacks=NSTACKS, precision="single", nthreads=2)


def _dirty_err(op, data):
    d = op.hdot(data["vis"], data["wgt"])
    got = d[data["pix"][:, 0], data["pix"][:, 1]]
    return np.abs(got - data["ref"]).max() / np.abs(data["ref"]).max()


def _predict_err(op, data):
    v = op.dot(data["img"])
    return np.abs(v - data["vref"]).max() / np.abs(data["vref"]).max()


# Measured on this problem (see test output with -s for the numbers printed below).
def test_dirty_double(op_double, data):
    err = _dirty_err(op_double, data)
    print(f"dirty double eps 1e-5: max err / peak {err:.2e}")
    assert err <= 1e-5


def test_predict_double(op_double, data):
    err = _predict_err(op_double, data)
    print(f"predict double eps 1e-5: max err / peak {err:.2e}")
    assert err <= 1e-5


def test_dirty_single(op_single, data):
    err = _dirty_err(op_single, data)
    print(f"dirty single eps 1e-4: max err / peak {err:.2e}")
    assert err <= 1e-4


def test_predict_single(op_single, data):
    err = _predict_err(op_single, data)
    print(f"predict single eps 1e-4: max err / peak {err:.2e}")
    assert err <= 1e-4


def test_adjoint_double(op_double, data):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(NPIX, NPIX))
    y = data["vis"]
    lhs = np.vdot(y, op_double.dot(x)).real
    rhs = np.vdot(x, op_double.hdot(y)).real
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


def test_threads_match_serial(op_double, data):
    op1 = make_operator(data["uvw"], FREQ, NPIX, NPIX, CELL, mode="wstack-wproject", epsilon=1e-5,
                           nstacks=NSTACKS, precision="double", nthreads=1)
    d1 = op1.hdot(data["vis"], data["wgt"])
    d2 = op_double.hdot(data["vis"], data["wgt"])
    np.testing.assert_allclose(d1, d2, rtol=0, atol=1e-12 * np.abs(d1).max())
    v1, v2 = op1.dot(data["img"]), op_double.dot(data["img"])
    np.testing.assert_allclose(v1, v2, rtol=0, atol=1e-12 * np.abs(v1).max())


def test_stages_split_samples(op_double, data):
    """Distributed split (eqs. 9-10): degridding/gridding a stack's samples in two parts on
    the same stack grid reproduces the whole."""
    k = 5
    idx = op_double.stack_idx[k]
    a, b = idx[::2], idx[1::2]
    grid = op_double.image_to_stack_grid(data["img"], k)
    whole = op_double.degrid_samples(grid, k, idx)
    parts = np.empty_like(whole)
    parts[::2] = op_double.degrid_samples(grid, k, a)
    parts[1::2] = op_double.degrid_samples(grid, k, b)
    np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-14 * np.abs(whole).max())
    g1 = op_double.grid_samples(data["vis"], k, idx)
    g2 = op_double.grid_samples(data["vis"], k, a)
    op_double.grid_samples(data["vis"], k, b, out_grid=g2)
    np.testing.assert_allclose(g2, g1, rtol=0, atol=1e-12 * np.abs(g1).max())


def test_support_grows_with_dw(op_double, data):
    sx, sy = op_double.per_sample_support()
    w = np.abs(data["uvw"][:, 2:3] * FREQ[None, :] / C_LIGHT)
    dw = np.abs(w - op_double.centres[op_double.labels.reshape(w.shape)])
    order = np.argsort(dw.ravel())
    s = sx.ravel()[order].astype(float)
    bins = np.array_split(s, 8)
    means = [b.mean() for b in bins]
    assert all(np.diff(means) >= 0) and means[-1] > means[0] + 2
    assert sx.min() >= op_double.W
    # the same law holds per sample: larger |dw| never gets a smaller support, within what
    # the support grows over one table node (the nodes bracketing -dw and +dw differ) plus
    # one cell of rounding
    t = op_double.tables
    step = max(int(np.max(np.abs(np.diff(np.ceil(2 * h))))) for h in (t.hs_x, t.hs_y))
    assert np.all(np.diff(s) >= -(1 + step))
    assert step <= 8


def test_one_vs_many_stacks():
    rng = np.random.default_rng(7)
    uvw = _uvw(rng, 800, 30.0)
    vis = rng.normal(size=(800, FREQ.size)) + 1j * rng.normal(size=(800, FREQ.size))
    d = [make_operator(uvw, FREQ, NPIX, NPIX, CELL, mode="wstack-wproject", epsilon=1e-5,
                       nstacks=k).hdot(vis)
         for k in (1, 4)]
    assert np.abs(d[0] - d[1]).max() <= 1e-5 * np.abs(d[0]).max()


def test_choose_nstacks_and_kmeans():
    rng = np.random.default_rng(1)
    w = rng.uniform(0, 600, 5000)
    geo = wproject_geometry(Field.of(1024, 1024, np.deg2rad(25.0) / 1024), 1e-5)
    k = choose_nstacks(w, geo)
    assert 1 < k < 64
    # fewer stacks pay off for a small w range
    assert choose_nstacks(w / 20, geo) < k
    c, lab = kmeans_w_local(w, 4)
    assert np.all(np.diff(c) > 0) and lab.max() == 3


def test_make_operator_weight_mask(data):
    """Integration through radimg.ops.operator.make_operator; masked samples cost nothing,
    predict 0 and are not gridded."""
    from radimg.ops.operator import make_operator

    mask = np.ones(data["vis"].shape, bool)
    mask[::3, 0] = False
    op = make_operator(data["uvw"], FREQ, NPIX, NPIX, CELL, epsilon=1e-4, nstacks=NSTACKS,
                       mode="wstack-wproject", precision="double", weight_mask=mask)
    assert isinstance(op, WProjectOperator)
    v = op.dot(data["img"])
    assert np.all(v[~mask] == 0)
    assert np.all(op.per_sample_load()[~mask] == 0)
    vm = np.where(mask, data["vis"], 0.0)
    np.testing.assert_allclose(op.hdot(data["vis"]), op.hdot(vm), rtol=0, atol=1e-12)


def test_given_geometry_reproduces_the_operator(op_double, data):
    """centres / dw_range / tables passed in (the distributed operator's path) give the same
    operator as the serial set-up, and the per-sample footprints contain every cell the
    gridder writes (slow oracle: grid one sample at a time, compare the non-zero cells)."""
    S = op_double
    uvw = data["uvw"][:300]
    T = WProjectOperator(uvw, FREQ, S.geometry, tables=S.tables)
    U = WProjectOperator(uvw, FREQ, S.geometry)
    np.testing.assert_array_equal(U.tables.tab_x, S.tables.tab_x)
    np.testing.assert_array_equal(T.per_sample_load(), U.per_sample_load())
    np.testing.assert_array_equal(T.labels, np.searchsorted(
        0.5 * (S.centres[1:] + S.centres[:-1]), np.abs(uvw[:, 2:3] * FREQ / C_LIGHT).ravel()))
    vis = np.ones((uvw.shape[0], FREQ.size), complex)
    k = int(np.argmax([i.size for i in T.stack_idx]))
    idx = T.stack_idx[k][:20]
    jx, jy, sx, sy = T.sample_footprints(k, idx)
    for n, i in enumerate(idx):
        g = T.grid_samples(vis, k, idx=np.array([i]))
        ys, xs = np.nonzero(g)
        assert ys.size and np.all((ys - jy[n]) % T.nyp < sy[n])
        assert np.all((xs - jx[n]) % T.nxp < sx[n])


def test_wproject_supports_equal_operator_load(op_double, data):
    """The planner's support model (radimg.parallel.balance.wproject_supports) is the
    operator's own per-sample load, not eq. 8."""
    from radimg.parallel.balance import sample_support, wproject_supports

    S = op_double
    w = np.abs(data["uvw"][:, 2:3] * FREQ / C_LIGHT).ravel()
    sx, sy, info = wproject_supports(w, S.centres[S.labels], NPIX, NPIX, CELL, S.epsilon)
    np.testing.assert_array_equal(sx * sy, S.per_sample_load().ravel())
    assert info["W"] == S.W and info["table_bytes"] == S.stats["table_bytes"]
    eq8 = sample_support(w - S.centres[S.labels], S.W, 0.3, 2 * NPIX * CELL)
    assert (sx * sy).sum() > 1.5 * (eq8 * eq8).sum()


def test_choose_nstacks_from_a_subsample():
    """A gathered subsample with n_total decides as the serial call on all samples does."""
    rng = np.random.default_rng(7)
    w = np.abs(rng.normal(0.0, 150.0, 60_000))
    geo = wproject_geometry(Field.of(NPIX, NPIX, CELL), 1e-5)
    full = choose_nstacks(w, geo)
    sub = np.random.default_rng(0).choice(w, 20_000, replace=False)
    assert choose_nstacks(sub, geo, n_total=w.size) == full
    assert choose_nstacks(sub, geo) <= full


def test_cis_cycles_matches_exp():
    """The branch-free (vectorisable) cos/sin of the image-domain chirp equals
    exp(2 pi i x) to ~1 ulp of the reduced argument, across quadrant boundaries."""
    import numba

    from radimg.kernels.wproject import cis_cycles

    @numba.njit
    def run(x, c, s):
        for i in range(x.size):
            c[i], s[i] = cis_cycles(x[i])

    rng = np.random.default_rng(0)
    q = np.arange(-8, 9) / 8.0
    x = np.concatenate([rng.uniform(-500, 500, 20000), q, q + 1e-12, q - 1e-12, [1e6 + 0.3]])
    c, s = np.empty_like(x), np.empty_like(x)
    run(x, c, s)
    ref = np.exp(2j * np.pi * (x - np.round(x)))  # the reduction is exact in double
    assert np.abs(c - ref.real).max() < 1e-15
    assert np.abs(s - ref.imag).max() < 1e-15
