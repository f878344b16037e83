"""Thin MPI helpers: lazy communicator, abort-on-exception, in-place reductions.

Only ``radimg/parallel/`` and the pipeline import mpi4py, and only inside functions: importing
this module never initialises MPI, so ``radimg --help`` and the pure tests stay MPI-free.
There is deliberately no module-level ``COMM_WORLD``; every distributed function takes a
``comm`` argument.
"""

from __future__ import annotations

import sys
import traceback

import numpy as np

__all__ = [
    "get_comm",
    "is_root",
    "install_abort_handler",
    "allreduce_array",
    "bcast_array",
    "comm_rank_size",
]


def get_comm():
    """``MPI.COMM_WORLD``, importing mpi4py (and so initialising MPI) on first call."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


def comm_rank_size(comm) -> tuple[int, int]:
    """``(rank, size)``; ``comm=None`` means a single serial process ``(0, 1)``."""
    if comm is None:
        return 0, 1
    return comm.Get_rank(), comm.Get_size()


def is_root(comm, root: int = 0) -> bool:
    """True on ``root`` (and always for ``comm=None``)."""
    return comm_rank_size(comm)[0] == root


def install_abort_handler(comm, exit_code: int = 1, stream=None) -> None:
    """Make an uncaught exception on any rank abort the whole job.

    Without this a rank that raises simply exits while the others block forever in the
    next collective. The hook writes the traceback, every line prefixed with
    ``[rank R/N]``, to stderr, flushes, and calls ``comm.Abort(exit_code)``.
    ``KeyboardInterrupt`` aborts too (a Ctrl-C on one rank must not hang the rest).
    """
    rank, size = comm_rank_size(comm)
    prefix = f"[rank {rank}/{size}] "
    previous = sys.excepthook

    def _hook(exc_type, exc, tb):
        out = stream if stream is not None else sys.stderr
        try:
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            lines = [f"{prefix}uncaught {exc_type.__name__} on rank {rank}; aborting job"]
            lines += [prefix + line for line in text.rstrip("\n").split("\n")]
            out.write("\n".join(lines) + "\n")
            out.flush()
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - never let reporting prevent the abort
            pass
        if comm is None:
            previous(exc_type, exc, tb)
            return
        comm.Abort(exit_code)

    sys.excepthook = _hook


def _mpi_op(op: str):
    from mpi4py import MPI

    ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "prod": MPI.PROD}
    try:
        return ops[op]
    except KeyError:
        raise ValueError(f"unknown reduction {op!r}; expected one of {sorted(ops)}") from None


def allreduce_array(comm, arr: np.ndarray, op: str = "sum") -> np.ndarray:
    """Reduce a contiguous numpy array over ``comm`` in place and return it.

    ``comm=None`` returns ``arr`` unchanged (the serial twin). The array must be
    C-contiguous so the reduction writes straight into it.
    """
    if comm is None:
        return arr
    if not arr.flags.c_contiguous:
        raise ValueError("allreduce_array needs a C-contiguous array (it reduces in place)")
    from mpi4py import MPI

    comm.Allreduce(MPI.IN_PLACE, arr, op=_mpi_op(op))
    return arr


def allreduce_scalar(comm, value, op: str = "sum", dtype=np.float64):
    """Reduce one number; returns a Python scalar of ``dtype``'s kind."""
    buf = np.array([value], dtype=dtype)
    allreduce_array(comm, buf, op)
    return buf[0].item()


def bcast_array(comm, arr: np.ndarray | None, root: int = 0) -> np.ndarray:
    """Broadcast an array (shape and dtype too) from ``root``; serial: returns ``arr``."""
    if comm is None:
        return arr
    meta = comm.bcast(None if arr is None else (arr.shape, arr.dtype.str), root=root)
    if comm.Get_rank() != root:
        arr = np.empty(meta[0], dtype=np.dtype(meta[1]))
    else:
        arr = np.ascontiguousarray(arr)
    comm.Bcast(arr, root=root)
    return arr
