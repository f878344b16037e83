"""DistributedOperator's work counters and its measurement-only naive scheme, under mpiexec
(launched by tests/test_mpi_launch.py at 1-4 ranks; scripts/bench_paper.py's load table).

- ``grid_cells`` / ``degrid_cells`` (wstack-wproject) equal the cells the kernels really
  write: every sample gridded alone onto an empty grid, its non-zero cells counted (oracle).
- ``balance="naive"`` (stack k on rank k mod n): the same images as the balanced scheme to
  summation order, nothing exchanged, and each rank's samples all in its own stacks.
"""

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

N_ROWS, NPIX, FOV_DEG = 600, 64, 20.0
FREQ = np.array([1.0e8])


def _data(seed=5):
    rng = np.random.default_rng(seed)
    cell = np.deg2rad(FOV_DEG) / NPIX
    c = 299792458.0
    uvw = np.empty((N_ROWS, 3))
    uvw[:, :2] = rng.normal(0, 0.12 / cell, (N_ROWS, 2)) * c / FREQ[0]
    uvw[:, 2] = np.clip(rng.normal(0, 120, N_ROWS), -300, 300) * c / FREQ[0]
    wgt = np.ones((N_ROWS, 1))
    wgt[rng.random(N_ROWS) < 0.05] = 0.0
    vis = rng.normal(size=wgt.shape) + 1j * rng.normal(size=wgt.shape)
    return uvw, wgt, vis, cell


def _my_rows(comm, n):
    r, s = comm.Get_rank(), comm.Get_size()
    return slice(r * n // s, (r + 1) * n // s)


def _op(balance):
    from mpi4py import MPI

    from radimg.parallel.operator import DistributedOperator

    comm = MPI.COMM_WORLD
    uvw, wgt, vis, cell = _data()
    sl = _my_rows(comm, N_ROWS)
    op = DistributedOperator(comm, uvw[sl], FREQ, wgt[sl], NPIX, NPIX, cell, epsilon=1e-4,
                             mode="wstack-wproject", nstacks=max(2, comm.Get_size()),
                             precision="double", balance=balance)
    return comm, op, op.redistribute_vis(vis[sl])


def test_kernel_cells_are_the_cells_the_kernels_write():
    comm, op, vis = _op("cuts")
    op.hdot(vis)
    op.hdot(vis)
    op.dot(np.ones((NPIX, NPIX)))
    inner = op.op
    oracle = 0
    for k in range(inner.nstacks):
        for i in inner.stack_idx[k]:
            g = inner.grid_samples(np.ones_like(vis), k, idx=np.array([i]))
            oracle += int(np.count_nonzero(g))
    st = op.stats
    assert st["n_hdot"] == 2 and st["n_dot"] == 1
    assert st["grid_cells"] == oracle, (st["grid_cells"], oracle)
    assert st["degrid_cells"] == oracle
    assert st["grid_cells_total"] == 2 * oracle
    lb = op.load_balance()
    assert lb["grid_cells"][comm.Get_rank()] == oracle
    assert sum(lb["grid_cells"]) == sum(lb["load"])  # the balancer's load is this count
    assert oracle > 0 or op.nsamples == 0


def test_naive_scheme_same_images_no_exchange():
    comm, bal, vis_b = _op("cuts")
    _, nai, vis_n = _op("naive")
    img_b = bal.hdot(vis_b)
    img_n = nai.hdot(vis_n)
    assert np.abs(img_n - img_b).max() <= 1e-10 * np.abs(img_b).max()
    x = np.zeros((NPIX, NPIX))
    x[NPIX // 3, NPIX // 2] = 1.0
    ids_b = np.concatenate(comm.allgather(bal.row_id))
    ids_n = np.concatenate(comm.allgather(nai.row_id))
    vb = np.concatenate(comm.allgather(bal.dot(x)))[np.argsort(ids_b)]
    vn = np.concatenate(comm.allgather(nai.dot(x)))[np.argsort(ids_n)]
    assert np.abs(vn - vb).max() <= 1e-10 * np.abs(vb).max()
    st = nai.stats
    assert st["tiles_sent"] == 0 and st["tiles_recv"] == 0
    r, s = comm.Get_rank(), comm.Get_size()
    held = [k for k in range(nai.nplanes) if nai.op.stack_idx[k].size]
    assert all(k % s == r for k in held), held
    assert sorted(nai.my_planes) == [k for k in range(nai.nplanes)
                                     if k % s == r and nai.owner[k] >= 0]


def test_naive_refused_outside_wproject():
    from radimg.parallel.operator import DistributedOperator

    with pytest.raises(ValueError, match="naive"):
        DistributedOperator(None, np.zeros((1, 3)), FREQ, np.ones((1, 1)), 16, 16, 1e-3,
                            mode="wstack", balance="naive")
