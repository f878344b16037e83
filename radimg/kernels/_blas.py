"""Cap the threads of the OpenBLAS that numpy loaded, for the few BLAS/LAPACK calls of set-up.

Why: under ``mpiexec -n 2`` on two cores every rank's OpenBLAS starts one thread per core,
and its threads spin while they wait. Measured on the 2-core dev machine: a 251 x 251
complex ``eigh`` took 0.017 s with one BLAS thread and 0.69 s with two, and the w-kernel
tables of the real MWA job (issue #13) took 28 s on rank 0 instead of 3.6 s while rank 1
waited in the broadcast. A rank's own thread budget (``gridder.nthreads``) is the right cap.

Works like threadpoolctl for this one library, without the dependency: the OpenBLAS
shared objects already mapped into the process (``/proc/self/maps``) are asked for their
``*_set_num_threads`` symbol. Anywhere that is not possible (no OpenBLAS, another BLAS,
not Linux) :func:`blas_threads` does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import re

__all__ = ["blas_threads"]

_SUFFIXES = ("scipy_openblas_{}64_", "scipy_openblas_{}", "openblas_{}64_", "openblas_{}")


@functools.cache
def _openblas():
    """[(get, set)] ctypes functions of every OpenBLAS mapped into this process."""
    try:
        import numpy  # noqa: F401  (maps numpy's OpenBLAS)

        with open("/proc/self/maps") as f:
            paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so[\S]*)", f.read())))
    except OSError:
        return []
    out = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pat in _SUFFIXES:
            get = getattr(lib, pat.format("get_num_threads"), None)
            put = getattr(lib, pat.format("set_num_threads"), None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                put.argtypes = [ctypes.c_int]
                out.append((get, put))
                break
    return out


@contextlib.contextmanager
def blas_threads(n):
    """Run the block with at most ``n`` OpenBLAS threads; the previous setting is restored."""
    libs = _openblas()
    saved = [get() for get, _ in libs]
    try:
        for (_get, put), old in zip(libs, saved, strict=True):
            if old > int(n):
                put(max(1, int(n)))
        yield
    finally:
        for (_, put), old in zip(libs, saved, strict=True):
            put(old)
