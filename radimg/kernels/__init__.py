"""Numba kernels: pure array functions (no MPI, no I/O, no globals)."""

