"""Launch tests/mpi/test_dist_operator.py (DistributedOperator) under ``mpiexec -n {1,2,3,4}``.

Same pattern as tests/test_mpi_launch.py (process group killed on a hard timeout, so a
deadlocked exchange fails fast instead of hanging CI); reuses its helpers.
"""

import sys

import pytest

from tests.test_mpi_launch import MPI_DIR, REPO, _mpiexec, _run

TIMEOUT_S = 240


@pytest.mark.parametrize("nranks", [1, 2, 3, 4])
def test_distributed_operator(nranks):
    args = [
        *_mpiexec(),
        "-n",
        str(nranks),
        sys.executable,
        "-m",
        "pytest",
        "--with-mpi",
        "-q",
        "-p",
        "no:cacheprovider",
        "--timeout",
        str(TIMEOUT_S - 20),
        str((MPI_DIR / "test_dist_operator.py").relative_to(REPO)),
    ]
    rc, out, err, _ = _run(args, TIMEOUT_S)
    assert rc == 0, f"mpiexec -n {nranks} failed (rc {rc})\n{out[-6000:]}\n{err[-6000:]}"
    assert "passed" in out and "skipped" not in out.split("\n")[-2]
