"""Under mpiexec: a failing test on one rank aborts the job instead of leaving the other
ranks blocked in the next collective until the launcher's timeout."""

import sys

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or not item.config.getoption("--with-mpi", default=False):
        return
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() > 1:
        rank = comm.Get_rank()
        text = str(report.longrepr)
        sys.stderr.write("".join(f"[rank {rank}] {line}\n" for line in text.splitlines()))
        sys.stderr.write(f"[rank {rank}] FAILED {item.nodeid}; aborting the MPI job\n")
        sys.stderr.flush()
        comm.Abort(1)
