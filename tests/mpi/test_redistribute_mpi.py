"""Alltoallv redistribution and distributed load-balanced cut points (run under mpiexec)."""

import numpy as np
import pytest

pytestmark = pytest.mark.mpi


def _slices(n, size):
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "_util", pathlib.Path(__file__).with_name("_util.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.uneven_slices(n, size)


def _global_data(n, seed=7):
    rng = np.random.default_rng(seed)
    gid = np.arange(n, dtype=np.int64)
    uvw = rng.normal(size=(n, 3))
    vis = (rng.normal(size=(n, 2)) + 1j * rng.normal(size=(n, 2))).astype(np.complex64)
    load = rng.integers(16, 500, n).astype(np.int64)
    load[rng.random(n) < 0.05] = 0
    keys = rng.integers(0, 12, n).astype(np.int64)
    return gid, uvw, vis, load, keys


@pytest.mark.parametrize("max_bytes", [2**31 - 1, 97])  # 97 B forces many split rounds
def test_redistribute_moves_every_sample_exactly_once(max_bytes):
    from mpi4py import MPI

    from radimg.parallel.redistribute import redistribute

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    n = 1500
    gid, uvw, vis, _, _ = _global_data(n)
    dest_all = np.random.default_rng(3).integers(0, size, n)
    a, b = _slices(n, size)[rank]
    out = redistribute(
        comm,
        {"gid": gid[a:b], "uvw": uvw[a:b], "vis": vis[a:b]},
        dest_all[a:b],
        max_message_bytes=max_bytes,
    )
    got = out["gid"]
    assert out["uvw"].shape == (got.size, 3) and out["vis"].dtype == np.complex64
    # I received exactly the rows addressed to me, payload intact ...
    np.testing.assert_array_equal(np.sort(got), np.flatnonzero(dest_all == rank))
    np.testing.assert_array_equal(out["uvw"], uvw[got])
    np.testing.assert_array_equal(out["vis"], vis[got])
    # ... ordered by source rank, stable within a source (deterministic)
    src = np.searchsorted([s[1] for s in _slices(n, size)], got, side="right")
    assert np.all(np.diff(src) >= 0)
    for s in np.unique(src):
        assert np.all(np.diff(got[src == s]) > 0)
    # globally: every sample once
    allg = np.concatenate(comm.allgather(got))
    np.testing.assert_array_equal(np.sort(allg), np.arange(n))


@pytest.mark.parametrize("method", ["cuts", "paper"])
@pytest.mark.parametrize("keyed", [False, True])
def test_prefix_sum_boundaries_equals_serial(method, keyed):
    from mpi4py import MPI

    from radimg.parallel.balance import (
        assignment_from_boundaries,
        balanced_assignment,
        load_per_rank,
    )
    from radimg.parallel.redistribute import prefix_sum_boundaries, redistribute

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    n = 3000
    gid, _, _, load, keys = _global_data(n)
    a, b = _slices(n, size)[rank]
    for n_ranks in sorted({size, 3}):
        kw = dict(keys=keys[a:b], nkeys=12) if keyed else {}
        dest, B = prefix_sum_boundaries(comm, load[a:b], n_ranks=n_ranks, method=method, **kw)
        # serial twin on the concatenated data in the same global order
        order = np.argsort(keys, kind="stable") if keyed else np.arange(n)
        bnd = balanced_assignment(load[order], n_ranks, method=method)
        ser = np.empty(n, np.int32)
        ser[order] = assignment_from_boundaries(bnd)
        np.testing.assert_array_equal(dest, ser[a:b])
        assert B[0] == 0 and B[-1] == load.sum() and np.all(np.diff(B) >= 0)
        per = load_per_rank(load, ser, n_ranks)
        if method == "paper":
            assert np.all(per[:-1] <= load.sum() // n_ranks)
        else:
            assert np.all(np.abs(per - load.sum() / n_ranks) <= load.max())
    # and the balanced assignment drives the redistribution (n_ranks = size)
    dest, _ = prefix_sum_boundaries(comm, load[a:b], method=method)
    out = redistribute(comm, {"gid": gid[a:b], "load": load[a:b]}, dest)
    mine = comm.allreduce(int(out["load"].sum()))
    assert mine == int(load.sum())
