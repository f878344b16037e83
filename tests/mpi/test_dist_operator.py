"""DistributedOperator (radimg/parallel/operator.py) against the serial operator, under mpiexec.

Launched by tests/test_mpi_operator_launch.py with 1-4 ranks. Input rows are split unevenly
(one rank empty from 3 ranks on); hdot (dirty, PSF) and dot (gathered by global row id)
must equal the serial operator to 1e-6 relative in double precision.
"""

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

N_ROWS, NPIX, FOV_DEG = 2000, 128, 22.0
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


def _data(seed=3, fov_deg=FOV_DEG):
    rng = np.random.default_rng(seed)
    cell = np.deg2rad(fov_deg) / NPIX
    c = 299792458.0
    uvmax = 0.4 / cell  # wavelengths at the top frequency
    uvw = np.empty((N_ROWS, 3))
    uvw[:, :2] = rng.uniform(-1, 1, (N_ROWS, 2)) * uvmax * c / FREQ[-1]
    uvw[:, 2] = rng.uniform(-300, 300, N_ROWS) * c / FREQ[-1]  # |w| <= 300 lambda
    wgt = rng.uniform(0.5, 2.0, (N_ROWS, FREQ.size))
    wgt[rng.random(wgt.shape) < 0.1] = 0.0
    wgt[:7] = 0.0  # fully flagged rows
    vis = rng.normal(size=wgt.shape) + 1j * rng.normal(size=wgt.shape)
    img = np.zeros((NPIX, NPIX))
    img[rng.integers(0, NPIX, 25), rng.integers(0, NPIX, 25)] = rng.uniform(0.1, 1.0, 25)
    return uvw, wgt, vis, img, cell


def _gather_rows(comm, row_id, arr):
    ids = np.concatenate(comm.allgather(row_id))
    vals = np.concatenate(comm.allgather(arr))
    return ids, vals


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.fixture(scope="module", params=["none", "wstack", "wstack-cheb"])
def setup(request):
    """``wstack-cheb``: a 0.5 deg field, where the cost model takes the w-term's Chebyshev
    terms (radimg/kernels/wcheb.py) over ES planes."""
    from mpi4py import MPI

    from radimg.ops.operator import make_operator
    from radimg.parallel.operator import DistributedOperator

    comm = MPI.COMM_WORLD
    cheb = request.param == "wstack-cheb"
    mode = "wstack" if cheb else request.param
    uvw, wgt, vis, img, cell = _data(fov_deg=0.5 if cheb else FOV_DEG)
    lo, hi = _slices(N_ROWS, comm.size)[comm.rank]
    kw = dict(epsilon=1e-6, mode=mode, oversampling="auto" if cheb else 2.0,
              precision="double")
    D = DistributedOperator(comm, uvw[lo:hi], FREQ, wgt[lo:hi], NPIX, NPIX, cell, **kw)
    S = make_operator(uvw, FREQ, NPIX, NPIX, cell, weight_mask=wgt != 0, **kw)
    return dict(
        comm=comm, D=D, S=S, uvw=uvw, wgt=wgt, vis=vis, img=img, lo=lo, hi=hi, cell=cell, kw=kw
    )


def test_geometry_is_global(setup):
    D, S = setup["D"], setup["S"]
    assert D.spec.nplanes == S.spec.nplanes and D.spec.W == S.spec.W
    assert (D.spec.nxp, D.spec.nyp) == (S.spec.nxp, S.spec.nyp)
    np.testing.assert_allclose([D.spec.w0, D.spec.dw], [S.spec.w0, S.spec.dw], rtol=1e-12)
    specs = setup["comm"].allgather(D.spec)
    assert all(s == specs[0] for s in specs)
    # one geometry object, resolved once from global values: equal on every rank and to
    # the serial operator's on all samples (so its serial operator re-derives nothing), and
    # no rows beyond this rank's own ride along in it (no global-range anchor rows)
    geos = setup["comm"].allgather(D.geometry)
    assert all(g == geos[0] for g in geos) and D.op.geometry is D.geometry
    assert D.geometry == S.geometry
    assert D.op.nrow == D.nrow and D.op.uvw.shape == D.uvw.shape
    if setup["kw"]["oversampling"] == "auto":  # the wstack-cheb case is what it says
        assert D.geometry.wkernel == "cheb" and D.geometry.nplanes == 3


def test_every_row_assigned_once_and_data_moved(setup):
    comm, D = setup["comm"], setup["D"]
    ids = np.concatenate(comm.allgather(D.row_id))
    np.testing.assert_array_equal(np.sort(ids), np.arange(N_ROWS))
    np.testing.assert_array_equal(D.uvw, setup["uvw"][D.row_id])
    np.testing.assert_array_equal(D.weight, setup["wgt"][D.row_id])
    moved = D.redistribute_vis(setup["vis"][setup["lo"] : setup["hi"]])
    np.testing.assert_array_equal(moved, setup["vis"][D.row_id])
    lb = D.load_balance()
    assert sum(lb["nsamples"]) == int((setup["wgt"] != 0).sum())
    assert lb["load_max_over_mean"] < 1.05


def test_hdot_dirty_and_psf_match_serial(setup):
    comm, D, S = setup["comm"], setup["D"], setup["S"]
    wgt, vis = setup["wgt"], setup["vis"]
    local_vis = D.redistribute_vis(vis[setup["lo"] : setup["hi"]])
    n0 = D.n_alltoallv
    dirty = D.hdot(local_vis, D.weight)
    assert D.n_alltoallv - n0 == 1  # one Alltoallv per application
    psf = D.hdot(np.ones_like(local_vis), D.weight)
    assert D.n_alltoallv - n0 == 2
    assert _rel(dirty, S.hdot(vis, wgt)) < 1e-6
    assert _rel(psf, S.hdot(np.ones_like(vis), wgt)) < 1e-6
    # identical model on every rank
    ref = comm.bcast(dirty, root=0)
    np.testing.assert_array_equal(dirty, ref)


def test_dot_matches_serial(setup):
    comm, D, S = setup["comm"], setup["D"], setup["S"]
    n0 = D.n_alltoallv
    v = D.dot(setup["img"])
    assert D.n_alltoallv - n0 == 1
    assert v.shape == (D.nrow, FREQ.size)
    ids, vals = _gather_rows(comm, D.row_id, v)
    ref = S.dot(setup["img"])
    assert _rel(vals, ref[ids]) < 1e-6
    assert np.all(vals[setup["wgt"][ids] == 0] == 0)


def test_split_messages_give_same_result(setup):
    from radimg.parallel.operator import DistributedOperator

    comm = setup["comm"]
    lo, hi = setup["lo"], setup["hi"]
    D = DistributedOperator(
        comm,
        setup["uvw"][lo:hi],
        FREQ,
        setup["wgt"][lo:hi],
        NPIX,
        NPIX,
        setup["cell"],
        max_message_bytes=100_000,
        **setup["kw"],
    )
    img = D.hdot(np.ones((D.nrow, FREQ.size), complex), D.weight)
    np.testing.assert_allclose(
        img,
        setup["D"].hdot(np.ones((setup["D"].nrow, FREQ.size), complex), setup["D"].weight),
        rtol=0,
        atol=1e-9 * np.abs(img).max(),
    )
    if comm.size > 1:  # the split path really runs (own planes do not travel)
        assert max(D.load_balance()["bytes_sent"]) > 100_000
        assert D.n_alltoallv > 1


def test_exchange_rounds_give_same_result(setup):
    """Planes exchanged in rounds (exchange_buffer_bytes of one byte: every plane that
    travels is a round of its own) give the one-round operator's images and predictions;
    each application makes one Alltoallv per round, and the buffers hold the largest
    round's cells only."""
    from radimg.parallel.operator import DistributedOperator

    comm, D1 = setup["comm"], setup["D"]
    lo, hi = setup["lo"], setup["hi"]
    D = DistributedOperator(comm, setup["uvw"][lo:hi], FREQ, setup["wgt"][lo:hi], NPIX, NPIX,
                            setup["cell"], exchange_buffer_bytes=1, **setup["kw"])
    nr = len(D._rounds)
    assert [r.lo for r in D._rounds][0] == 0 and D._rounds[-1].hi == D.nplanes
    assert sorted(p for r in D._rounds for p in r.mine) == sorted(D.my_planes)
    ones = np.ones((D.nrow, FREQ.size), complex)
    n0 = D.n_alltoallv
    img = D.hdot(ones, D.weight)
    assert D.n_alltoallv - n0 == (nr if comm.size > 1 else 1)
    ref = D1.hdot(np.ones((D1.nrow, FREQ.size), complex), D1.weight)
    np.testing.assert_allclose(img, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    v = D.dot(setup["img"])
    ids, vals = _gather_rows(comm, D.row_id, v)
    ids1, vals1 = _gather_rows(comm, D1.row_id, D1.dot(setup["img"]))
    order, order1 = np.argsort(ids), np.argsort(ids1)
    np.testing.assert_array_equal(ids[order], ids1[order1])
    assert _rel(vals[order], vals1[order1]) < 1e-12
    np.testing.assert_array_equal(D._fwd_send, D1._fwd_send)  # same traffic in all
    moving = set().union(*comm.allgather({p for p, _, _ in D1._recv_plan}))
    if len(moving) > 1:  # planes that travel: at least two rounds, smaller buffers
        assert nr > 1
        assert sum(D._buf_cells) <= sum(D1._buf_cells)
        assert max(comm.allgather(sum(D._buf_cells))) < max(comm.allgather(sum(D1._buf_cells)))


def test_tile_pack_equals_cell_index_oracle(setup):
    """Slow oracle for ``_pack_tiles`` (int32 tile ids, row slices): every mode equals
    fancy indexing with the int64 cells of the same tiles (``_cells``), at the offsets the
    exchange uses, for every tile list this rank packs or unpacks."""
    from radimg.parallel.operator import PACK, UNPACK, UNPACK_ADD, ZERO

    D = setup["D"]
    rng = np.random.default_rng(D.rank)
    shape = D._grid_shape
    lists = [(t, off) for _, t, off in D._recv_plan]
    lists += [(t, off) for p in D.my_planes for t, off in D._serve_by_plane[p]]
    lists.append((np.arange(D._tile_ncells.size, dtype=np.int32)[::-3].copy(), 5))
    for tiles, off in lists:
        cells = D._cells(tiles)
        assert cells.size == int(D._tile_ncells[tiles].sum())
        assert np.unique(cells).size == cells.size  # tiles of one list never overlap
        grid = rng.normal(size=shape) + 1j * rng.normal(size=shape)
        buf = np.zeros(off + cells.size + 3, complex)
        assert D._pack(grid, tiles, buf, off, PACK) == off + cells.size
        np.testing.assert_array_equal(buf[off : off + cells.size], grid.ravel()[cells])
        assert not buf[:off].any() and not buf[off + cells.size :].any()
        buf[off : off + cells.size] = rng.normal(size=cells.size)
        for mode in (UNPACK, UNPACK_ADD, ZERO):
            got, ref = grid.copy(), grid.copy().ravel()
            D._pack(got, tiles, buf, off, mode)
            seg = buf[off : off + cells.size]
            ref[cells] = {UNPACK: seg, UNPACK_ADD: ref[cells] + seg, ZERO: 0}[mode]
            np.testing.assert_array_equal(got.ravel(), ref)


def test_own_planes_bypass_exchange_buffers(setup):
    """A rank's own planes never enter the Alltoallv buffers; what one rank sends to
    another is exactly what that rank receives from it (the counts pin the buffers that
    radimg/parallel/plan.py's ``grid_tiles`` term models)."""
    comm, D = setup["comm"], setup["D"]
    assert D._fwd_send[D.rank] == 0 and D._fwd_recv[D.rank] == 0
    assert all(D.owner[p] != D.rank for p, _, _ in D._recv_plan)
    sends = np.array(comm.allgather(D._fwd_send))
    recvs = np.array(comm.allgather(D._fwd_recv))
    np.testing.assert_array_equal(sends, recvs.T)
    remote = sorted(p for p, _, _ in D._recv_plan)
    assert remote == [p for p in D.touched_planes if D.owner[p] != D.rank]
    for tiles in D._touched.values():
        assert tiles.dtype == np.int32


def test_single_precision_repeats_root_only_and_release(setup):
    """Single precision keeps hdot's float32 accumulator between applications: a second
    application (2 x the visibilities) gives exactly twice the first image and leaves the
    first result untouched (no aliasing of the kept array); ``root_only`` gives rank 0 the
    same image (None elsewhere); after ``release`` the next application makes new buffers
    and the same image again."""
    from radimg.parallel.operator import DistributedOperator

    comm = setup["comm"]
    lo, hi = setup["lo"], setup["hi"]
    kw = {**setup["kw"], "precision": "single", "epsilon": 1e-5}
    D = DistributedOperator(comm, setup["uvw"][lo:hi], FREQ, setup["wgt"][lo:hi], NPIX, NPIX,
                            setup["cell"], **kw)
    v = D.redistribute_vis(setup["vis"][lo:hi])
    a = D.hdot(v, D.weight)
    keep = a.copy()
    b = D.hdot(2 * v, D.weight)
    np.testing.assert_array_equal(b, 2 * keep)
    np.testing.assert_array_equal(a, keep)
    assert a.dtype == np.float32 and np.abs(a).max() > 0
    r = D.hdot(v, D.weight, root_only=True, release=True)
    assert (r is None) == (comm.rank != 0)
    if r is not None:  # a Reduce may sum the ranks in another order than the Allreduce
        np.testing.assert_allclose(r, keep, rtol=0, atol=1e-6 * np.abs(keep).max())
    assert D._scratch_grid is None and D._acc_buf is None
    np.testing.assert_array_equal(D.hdot(v, D.weight), keep)


def test_single_precision_float32_sum_matches_double_sum(setup):
    """In single precision the planes (wstack; mode none: its one plane) are summed in
    float32 (the kept accumulator): the image stays within 2e-6 of the peak of the serial
    operator's, which sums the same float32 planes in float64 (epsilon 1e-5 is the accuracy
    asked for), and both are within epsilon of the double-precision image. Fails if the float32 sum loses more
    than ~30 float32 roundings of the peak."""
    from radimg.ops.operator import make_operator
    from radimg.parallel.operator import DistributedOperator

    comm = setup["comm"]
    lo, hi = setup["lo"], setup["hi"]
    kw = {**setup["kw"], "precision": "single", "epsilon": 1e-5}
    D = DistributedOperator(comm, setup["uvw"][lo:hi], FREQ, setup["wgt"][lo:hi], NPIX, NPIX,
                            setup["cell"], **kw)
    S = make_operator(setup["uvw"], FREQ, NPIX, NPIX, setup["cell"],
                      weight_mask=setup["wgt"] != 0, **kw)
    # many planes to sum (one plane in mode none, three Chebyshev terms in wstack-cheb)
    assert D.nplanes > 10 or setup["kw"]["mode"] == "none" or D.geometry.wkernel == "cheb"
    d = D.hdot(D.redistribute_vis(setup["vis"][lo:hi]), D.weight)
    s = S.hdot(setup["vis"], setup["wgt"])
    assert D._acc_buf.dtype == np.float32
    assert _rel(d, s) < 2e-6
    assert _rel(d, setup["S"].hdot(setup["vis"], setup["wgt"])) < 1e-5
