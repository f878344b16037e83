"""Launched by tests/test_mpi_launch.py under ``mpiexec -n 3``: rank 1 raises, the others
wait in a collective that would hang forever without the abort handler."""

import sys

from radimg.parallel.mpi import get_comm, install_abort_handler

comm = get_comm()
install_abort_handler(comm)
if comm.Get_rank() == 1:
    raise RuntimeError("deliberate failure on rank 1")
comm.Barrier()
print(f"rank {comm.Get_rank()} passed the barrier (should never happen)", flush=True)
sys.exit(0)
