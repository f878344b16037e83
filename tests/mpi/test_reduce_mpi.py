"""``allreduce_array`` / ``reduce_array`` reduce in pieces (bounded MPI temporaries): the
result equals numpy's reduction of every rank's array, at any piece size (one element up
to the whole array), for 1-D and 2-D arrays whose size is not a multiple of the piece;
``reduce_array`` leaves the other ranks' arrays as they were and returns None there."""

import numpy as np
import pytest

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("chunk", [8, 24, 4096, 2**30])
@pytest.mark.parametrize("shape", [(37,), (5, 7), (0,)])
def test_piecewise_reductions_equal_numpy(monkeypatch, chunk, shape):
    from mpi4py import MPI

    from radimg.parallel import mpi

    monkeypatch.setattr(mpi, "REDUCE_CHUNK_BYTES", chunk)
    comm = MPI.COMM_WORLD
    mine = [np.random.default_rng(r).normal(size=shape) for r in range(comm.size)]
    for op, ref in (("sum", np.sum), ("max", np.max), ("min", np.min)):
        want = ref(np.stack(mine), axis=0)
        a = mine[comm.rank].copy()
        out = mpi.allreduce_array(comm, a, op)
        assert out is a
        np.testing.assert_allclose(a, want, rtol=1e-14)
        b = mine[comm.rank].copy()
        got = mpi.reduce_array(comm, b, op, root=0)
        if comm.rank == 0:
            assert got is b
            np.testing.assert_allclose(b, want, rtol=1e-14)
        else:
            assert got is None
            np.testing.assert_array_equal(b, mine[comm.rank])
    if comm.size > 1 and np.prod(shape) > 0:
        assert not np.allclose(want, mine[comm.rank])  # the test sees every rank's data


def test_serial_twins_and_layout_checks():
    from radimg.parallel import mpi

    a = np.arange(6.0)
    assert mpi.allreduce_array(None, a) is a and mpi.reduce_array(None, a) is a
    from mpi4py import MPI

    with pytest.raises(ValueError, match="C-contiguous"):
        mpi.reduce_array(MPI.COMM_WORLD, np.zeros((4, 4))[:, ::2])


def test_ranks_on_root_node_counts_this_machine():
    """Every rank of the test job runs on this one machine: rank 0's node holds them all
    (the minor cycle's thread count); serial: 1."""
    from mpi4py import MPI

    from radimg.parallel.mpi import ranks_on_root_node

    comm = MPI.COMM_WORLD
    assert ranks_on_root_node(comm) == comm.size
    assert ranks_on_root_node(None) == 1
