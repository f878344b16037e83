"""``radimg.parallel.mpi.wait_for_root`` (the other ranks sleep instead of spinning while
rank 0 runs a minor cycle) is a barrier with rank 0: nothing returns before rank 0 has
called it, at any rank count, and it can be called again at once."""

import pathlib
import time

import pytest

pytestmark = pytest.mark.mpi


def test_no_rank_returns_before_root_has_called(tmp_path_factory):
    from mpi4py import MPI

    from radimg.parallel.mpi import wait_for_root

    comm = MPI.COMM_WORLD
    d = comm.bcast(str(tmp_path_factory.mktemp("wait")) if comm.rank == 0 else None)
    for k in range(3):
        mark = pathlib.Path(d) / f"root-called-{k}"
        if comm.rank == 0:
            time.sleep(0.1)  # without the barrier the others would look before this
            mark.write_text("x")  # happens before rank 0 enters the barrier
        wait_for_root(comm, poll_s=0.0005)
        assert mark.exists(), f"rank {comm.rank} returned before rank 0 called (round {k})"
    wait_for_root(None)  # serial: a no-op
