"""DistributedOperator in mode ``wstack-wproject`` against the serial WProjectOperator.

Launched by tests/test_mpi_launch.py with 1-4 ranks. Input rows are split unevenly (one rank
empty from 3 ranks on). Distributed k-means stacks, the global kernel tables, the real
per-sample load (kernel cells from the tables), the (stack, tile) ordered balanced cut and
the tile exchange must reproduce the serial operator: dirty image, PSF and degridded
visibilities to 1e-10 relative in double and 1e-6 in single precision.
"""

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

N_ROWS, NPIX, FOV_DEG = 1500, 96, 22.0
FREQ = np.array([1.0e8, 1.3e8])
# The issue asks for 1e-6. In double precision the distributed and serial sums differ only
# in summation order, but the w-projection corrections amplify rounding: a fresh-clone CI
# run measured 1.1e-10 (2, 3 ranks) and 1.7e-10 (4 ranks) where other runs pass 1e-10.
TOL = {"double": 1e-8, "single": 1e-6}
EPS = {"double": 1e-5, "single": 1e-4}


def _slices(n, size):
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "_util", pathlib.Path(__file__).with_name("_util.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.uneven_slices(n, size)


def _data(seed=5):
    rng = np.random.default_rng(seed)
    cell = np.deg2rad(FOV_DEG) / NPIX
    c = 299792458.0
    uvmax = 0.4 / cell
    uvw = np.empty((N_ROWS, 3))
    uvw[:, :2] = rng.uniform(-1, 1, (N_ROWS, 2)) * uvmax * c / FREQ[-1]
    # a Gaussian w (many small |w|, a thin tail: k-means stacks of unequal width and load)
    uvw[:, 2] = np.clip(rng.normal(0, 120, N_ROWS), -350, 350) * c / FREQ[-1]
    wgt = rng.uniform(0.5, 2.0, (N_ROWS, FREQ.size))
    wgt[rng.random(wgt.shape) < 0.1] = 0.0
    wgt[:7] = 0.0
    vis = rng.normal(size=wgt.shape) + 1j * rng.normal(size=wgt.shape)
    img = np.zeros((NPIX, NPIX))
    img[rng.integers(0, NPIX, 25), rng.integers(0, NPIX, 25)] = rng.uniform(0.1, 1.0, 25)
    return uvw, wgt, vis, img, cell


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.fixture(scope="module", params=["double", "single"])
def setup(request):
    from mpi4py import MPI

    from radimg.ops.operator import make_operator
    from radimg.parallel.operator import DistributedOperator

    comm = MPI.COMM_WORLD
    prec = request.param
    uvw, wgt, vis, img, cell = _data()
    lo, hi = _slices(N_ROWS, comm.size)[comm.rank]
    kw = dict(epsilon=EPS[prec], oversampling=2.0, precision=prec, nstacks="auto")
    D = DistributedOperator(
        comm, uvw[lo:hi], FREQ, wgt[lo:hi], NPIX, NPIX, cell, mode="wstack-wproject", **kw
    )
    S = make_operator(uvw, FREQ, NPIX, NPIX, cell, mode="wstack-wproject", weight_mask=wgt != 0,
                      **kw)
    return dict(comm=comm, D=D, S=S, uvw=uvw, wgt=wgt, vis=vis, img=img, lo=lo, hi=hi, prec=prec)


def test_stacks_and_tables_are_global(setup):
    comm, D, S = setup["comm"], setup["D"], setup["S"]
    assert D.nplanes == S.nstacks > 2
    np.testing.assert_allclose(D.centres, S.centres, rtol=1e-12, atol=1e-9)
    allc = comm.allgather(D.centres)
    assert all(np.array_equal(c, allc[0]) for c in allc)
    tabs = comm.allgather(D.op.tables.tab_x[:, :, ::97])
    assert all(np.array_equal(t, tabs[0]) for t in tabs)
    assert D.op.tables.tab_x.shape == S.tables.tab_x.shape


def test_every_row_assigned_once_with_real_load(setup):
    comm, D, S = setup["comm"], setup["D"], setup["S"]
    ids = np.concatenate(comm.allgather(D.row_id))
    np.testing.assert_array_equal(np.sort(ids), np.arange(N_ROWS))
    np.testing.assert_array_equal(D.uvw, setup["uvw"][D.row_id])
    np.testing.assert_array_equal(D.weight, setup["wgt"][D.row_id])
    moved = D.redistribute_vis(setup["vis"][setup["lo"] : setup["hi"]])
    np.testing.assert_array_equal(moved, setup["vis"][D.row_id])
    lb = D.load_balance()
    assert sum(lb["nsamples"]) == int((setup["wgt"] != 0).sum())
    # the balanced load is the serial operator's own per-sample load (kernel cells), which
    # is not uniform: supports grow with |w - w_k|
    ref = S.per_sample_load()
    assert sum(lb["load"]) == int(ref.sum())
    assert len(np.unique(ref[ref > 0])) > 3
    np.testing.assert_array_equal(D.op.per_sample_load(), ref[D.row_id])
    assert lb["load_max_over_mean"] < 1.05


def test_touched_tiles_cover_every_footprint(setup):
    """Slow oracle for M_jk: every grid cell any local sample's kernel reads lies in the
    tiles this rank receives for that stack."""
    D = setup["D"]
    nyp, nxp = D._grid_shape
    for k in D.touched_planes:
        jx, jy, sx, sy = D.op.sample_footprints(k)
        need = np.zeros(nyp * nxp, bool)
        need[D._cells(D._touched[k])] = True
        for n in range(0, jx.size, 7):
            yy = (jy[n] + np.arange(sy[n])) % nyp
            xx = (jx[n] + np.arange(sx[n])) % nxp
            assert need[(yy[:, None] * nxp + xx[None, :]).ravel()].all()
    for k in range(D.nplanes):
        if k not in D.touched_planes:
            assert D.op.stack_idx[k].size == 0


def test_hdot_dirty_and_psf_match_serial(setup):
    comm, D, S = setup["comm"], setup["D"], setup["S"]
    wgt, vis = setup["wgt"], setup["vis"]
    local_vis = D.redistribute_vis(vis[setup["lo"] : setup["hi"]])
    n0 = D.n_alltoallv
    dirty = D.hdot(local_vis, D.weight)
    assert D.n_alltoallv - n0 == 1  # one Alltoallv per application
    psf = D.hdot(np.ones_like(local_vis), D.weight)
    assert D.n_alltoallv - n0 == 2
    tol = TOL[setup["prec"]]
    assert _rel(dirty, S.hdot(vis, wgt)) < tol
    assert _rel(psf, S.hdot(np.ones_like(vis), wgt)) < tol
    ref = comm.bcast(dirty, root=0)
    np.testing.assert_array_equal(dirty, ref)


def test_dot_matches_serial(setup):
    comm, D, S = setup["comm"], setup["D"], setup["S"]
    n0 = D.n_alltoallv
    v = D.dot(setup["img"])
    assert D.n_alltoallv - n0 == 1
    assert v.shape == (D.nrow, FREQ.size)
    ids = np.concatenate(comm.allgather(D.row_id))
    vals = np.concatenate(comm.allgather(v))
    assert _rel(vals, S.dot(setup["img"])[ids]) < TOL[setup["prec"]]
    assert np.all(vals[setup["wgt"][ids] == 0] == 0)


def test_split_messages_give_same_result(setup):
    from radimg.parallel.operator import DistributedOperator

    comm, lo, hi = setup["comm"], setup["lo"], setup["hi"]
    _, _, _, _, cell = _data()
    D = DistributedOperator(
        comm, setup["uvw"][lo:hi], FREQ, setup["wgt"][lo:hi], NPIX, NPIX, cell,
        mode="wstack-wproject", epsilon=EPS[setup["prec"]], precision=setup["prec"],
        max_message_bytes=50_000,
    )
    D0 = setup["D"]
    img = D.hdot(np.ones((D.nrow, FREQ.size), complex), D.weight)
    ref = D0.hdot(np.ones((D0.nrow, FREQ.size), complex), D0.weight)
    # only the transport differs (FFTW plans of two operators may round differently)
    assert _rel(img, ref) < TOL[setup["prec"]]
    if comm.size > 1:  # the split path really runs (own stacks do not travel)
        assert max(D.load_balance()["bytes_sent"]) > 50_000
        assert D.n_alltoallv > 1
