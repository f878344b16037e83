"""Distributed k-means on w == serial k-means on the concatenated data (run under mpiexec)."""

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


@pytest.mark.parametrize("k", [1, 4, 9])
def test_kmeans_distributed_equals_serial(k):
    from mpi4py import MPI

    from radimg.parallel.kmeans import kmeans_w

    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(123 + k)  # same global data on every rank
    n = 6000
    w = np.clip(rng.normal(0, 200, n), -600, 600)
    valid = rng.random(n) > 0.1
    c_ser, l_ser = kmeans_w(w, k, valid=valid)
    a, b = _slices(n, comm.Get_size())[comm.Get_rank()]
    c_dist, l_dist = kmeans_w(w[a:b], k, valid=valid[a:b], comm=comm)
    np.testing.assert_allclose(c_dist, c_ser, rtol=0, atol=1e-12 * max(1.0, np.abs(c_ser).max()))
    np.testing.assert_array_equal(l_dist, l_ser[a:b])
    # every rank holds identical centres (bitwise)
    allc = comm.allgather(c_dist)
    for c in allc:
        np.testing.assert_array_equal(c, allc[0])


def test_kmeans_distributed_empty_cluster_reseed():
    from mpi4py import MPI

    from radimg.parallel.kmeans import kmeans_w

    comm = MPI.COMM_WORLD
    # Two far-apart groups plus one outlier: with k=4 the quantile start leaves clusters empty.
    w = np.concatenate([np.full(50, 10.0), np.full(50, 11.0), [500.0], np.full(49, 10.5)])
    c_ser, l_ser = kmeans_w(w, 4)
    a, b = _slices(w.size, comm.Get_size())[comm.Get_rank()]
    c_dist, l_dist = kmeans_w(w[a:b], 4, comm=comm)
    np.testing.assert_allclose(c_dist, c_ser, atol=1e-12)
    np.testing.assert_array_equal(l_dist, l_ser[a:b])
