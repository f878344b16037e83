"""Small inversion (radimg/ops/resample.py) around the DistributedOperator, under mpiexec.

Launched by tests/test_mpi_launch.py with 1-4 ranks. Every rank must pick the same coarse
geometry from its own rows (one Allreduce), and the wrapped distributed operator must equal
the wrapped serial operator on all rows (hdot: the images; dot: gathered by global row id),
so images do not depend on the rank count beyond summation order.
"""

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

N_ROWS, NPIX, FOV_DEG = 1200, 192, 20.0
FREQ = np.array([1.0e8, 1.3e8])


def _slices(n, size):
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "_util", pathlib.Path(__file__).with_name("_util.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.uneven_slices(n, size)


def _data(seed=7):
    rng = np.random.default_rng(seed)
    cell = np.deg2rad(FOV_DEG) / NPIX
    c = 299792458.0
    uvw = np.empty((N_ROWS, 3))
    uvw[:, :2] = rng.uniform(-30.0, 30.0, (N_ROWS, 2)) * c / FREQ[-1]  # far inside the grid
    uvw[:, 2] = rng.uniform(-60.0, 60.0, N_ROWS) * c / FREQ[-1]
    wgt = rng.uniform(0.5, 2.0, (N_ROWS, FREQ.size))
    wgt[rng.random(wgt.shape) < 0.1] = 0.0
    vis = rng.normal(size=wgt.shape) + 1j * rng.normal(size=wgt.shape)
    img = np.zeros((NPIX, NPIX))
    img[rng.integers(0, NPIX, 20), rng.integers(0, NPIX, 20)] = rng.uniform(0.1, 1.0, 20)
    return uvw, wgt, vis, img, cell


@pytest.fixture(scope="module", params=["wstack", "wstack-wproject"])
def setup(request):
    from mpi4py import MPI

    from radimg.ops.operator import make_operator
    from radimg.ops.resample import small_inversion
    from radimg.parallel.operator import DistributedOperator

    comm = MPI.COMM_WORLD
    mode = request.param
    uvw, wgt, vis, img, cell = _data()
    lo, hi = _slices(N_ROWS, comm.size)[comm.rank]
    kw = dict(epsilon=1e-6, mode=mode, precision="double")
    D = small_inversion(
        lambda nx, ny, c: DistributedOperator(comm, uvw[lo:hi], FREQ, wgt[lo:hi], nx, ny, c,
                                              **kw),
        uvw[lo:hi], FREQ, wgt[lo:hi] != 0, NPIX, NPIX, cell, epsilon=1e-6, mode=mode,
        comm=comm)
    S = small_inversion(
        lambda nx, ny, c: make_operator(uvw, FREQ, nx, ny, c, weight_mask=wgt != 0, **kw),
        uvw, FREQ, wgt != 0, NPIX, NPIX, cell, epsilon=1e-6, mode=mode)
    return dict(comm=comm, D=D, S=S, wgt=wgt, vis=vis, img=img, lo=lo, hi=hi)


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def test_same_geometry_on_every_rank_and_as_serial(setup):
    from radimg.ops.resample import SmallInversion

    D, S = setup["D"], setup["S"]
    assert isinstance(D, SmallInversion) and isinstance(S, SmallInversion)
    geoms = setup["comm"].allgather(D.small_geometry)
    assert all(g == S.small_geometry for g in geoms)
    assert D.op.npix_x == S.op.npix_x == S.small_geometry.nc_x < NPIX


def test_hdot_equals_serial(setup):
    D, S, wgt, vis = setup["D"], setup["S"], setup["wgt"], setup["vis"]
    lo, hi = setup["lo"], setup["hi"]
    mine = D.redistribute_vis(vis[lo:hi])
    mine_w = D.redistribute_vis(wgt[lo:hi])
    dirty = D.hdot(mine, mine_w)
    ref = S.hdot(vis, wgt)
    assert dirty.shape == (NPIX, NPIX)
    assert _rel(dirty, ref) <= 1e-8
    psf = D.hdot(np.ones_like(mine), mine_w)
    assert _rel(psf, S.hdot(np.ones_like(vis), wgt)) <= 1e-8


def test_dot_equals_serial(setup):
    comm, D, S = setup["comm"], setup["D"], setup["S"]
    v = D.dot(setup["img"])
    ids = np.concatenate(comm.allgather(D.row_id))
    vals = np.concatenate(comm.allgather(v))
    ref = S.dot(setup["img"])
    assert _rel(vals, ref[ids]) <= 1e-8
    lb = D.load_balance()
    assert lb["small_inversion"]["coarse_npix"] == [D.small_geometry.nc_y, D.small_geometry.nc_x]
