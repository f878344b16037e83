"""Thin MPI helpers: lazy communicator, abort-on-exception, in-place reductions.

Only ``radimg/parallel/`` and the pipeline import mpi4py, and only inside functions: importing
this module never initialises MPI, so ``radimg --help`` and the pure tests stay MPI-free.
There is deliberately no module-level ``COMM_WORLD``; every distributed function takes a
``comm`` argument.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager

import numpy as np

__all__ = [
    "get_comm",
    "is_root",
    "install_abort_handler",
    "abort_on_exception",
    "report_exception",
    "StopSignals",
    "abort_interrupted",
    "allreduce_array",
    "reduce_array",
    "ranks_on_root_node",
    "Collectives",
    "bcast_array",
    "comm_rank_size",
    "everywhere",
    "is_collective",
    "raise_from_any_rank",
    "check_on_root",
    "wait_for_root",
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


# Before MPI_Abort: let the launcher forward what this rank just wrote to stderr (hydra
# kills the ranks and may drop output still in its pipes).
IO_DRAIN_S = 0.3


def report_exception(comm, exc_type, exc, tb, stream=None) -> None:
    """Write a traceback to stderr with every line prefixed ``[rank R/N]``, and flush."""
    rank, size = comm_rank_size(comm)
    prefix = f"[rank {rank}/{size}] "
    out = stream if stream is not None else sys.stderr
    try:
        if issubclass(exc_type, KeyboardInterrupt):  # Ctrl-C: the reason, not a traceback
            out.write(f"{prefix}{INTERRUPT_MESSAGE}\n")
            out.flush()
            return
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        lines = [f"{prefix}uncaught {exc_type.__name__} on rank {rank}; aborting job"]
        lines += [prefix + line for line in text.rstrip("\n").split("\n")]
        out.write("\n".join(lines) + "\n")
        out.flush()
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - never let reporting prevent the abort
        pass


def abort_on_exception(comm, exc: BaseException, exit_code: int = 1, stream=None) -> None:
    """Report ``exc`` with its rank and end the whole job with ``comm.Abort(exit_code)``.

    For code that catches exceptions itself (the CLI does): an exception raised on one rank
    only must not leave the other ranks blocked in their next collective.
    """
    report_exception(comm, type(exc), exc, exc.__traceback__, stream)
    time.sleep(IO_DRAIN_S)
    comm.Abort(exit_code)


def abort_interrupted(stream=None) -> None:
    """After a ``KeyboardInterrupt`` outside the run's signal handling (start-up, imports):
    in a multi-rank job, print the one-line reason and end every rank with
    ``MPI_Abort(130)`` rather than exit this rank alone while the others wait in their next
    collective. Returns (the caller exits 130) when MPI was never initialised or the job
    has one rank; never initialises MPI itself."""
    mod = sys.modules.get("mpi4py.MPI")
    if mod is None:
        return
    try:
        if not mod.Is_initialized() or mod.Is_finalized():
            return
        comm = mod.COMM_WORLD
        if comm.Get_size() < 2:
            return
    except Exception:  # noqa: BLE001 - fall back to a plain exit 130
        return
    report_exception(comm, KeyboardInterrupt, KeyboardInterrupt(), None, stream)
    time.sleep(IO_DRAIN_S)
    comm.Abort(EXIT_SIGINT)


# --------------------------------------------------------------------------------------
# User errors raised on every rank alike
# --------------------------------------------------------------------------------------

#: Attribute set on an exception that every rank of the job raises (see :func:`everywhere`).
COLLECTIVE_ATTR = "radimg_collective"


def everywhere(exc: BaseException) -> BaseException:
    """Mark ``exc`` as raised on every rank alike (a collective decision, or a deterministic
    check of replicated data), and return it: the CLI then prints it once (rank 0) and every
    rank exits 2. A user error without the mark, in a job of several ranks, may be one
    rank's alone; the CLI ends the whole job with ``MPI_Abort(2)`` rather than let that
    rank exit while the others wait in their next collective (they would wait for ever)."""
    try:
        setattr(exc, COLLECTIVE_ATTR, True)
    except AttributeError:  # pragma: no cover - exceptions without a __dict__
        pass
    return exc


def is_collective(exc: BaseException) -> bool:
    return bool(getattr(exc, COLLECTIVE_ATTR, False))


def raise_from_any_rank(comm, exc: BaseException | None) -> None:
    """Collective: if any rank holds an error, raise the first one (lowest rank) on every
    rank, marked :func:`everywhere`."""
    errs = [exc] if comm is None else comm.allgather(exc)
    for e in errs:
        if e is not None:
            raise everywhere(e)


def check_on_root(comm, fn, *args, **kwargs):
    """Collective: run ``fn`` on rank 0 and return its result on every rank; a
    ``ValueError``/``OSError``/``NotImplementedError`` it raises (user errors derive from
    these) is raised on every rank, marked :func:`everywhere`."""
    err = result = None
    if comm is None or comm.Get_rank() == 0:
        try:
            result = fn(*args, **kwargs)
        except (ValueError, OSError, NotImplementedError) as exc:
            err = exc
    if comm is not None:
        err, result = comm.bcast((err, result), root=0)
    if err is not None:
        raise everywhere(err)
    return result


def install_abort_handler(comm, exit_code: int = 1, stream=None) -> None:
    """Make an uncaught exception on any rank abort the whole job.

    Without this a rank that raises simply exits while the others block forever in the
    next collective. The hook writes the traceback, every line prefixed with
    ``[rank R/N]``, to stderr, flushes, and calls ``comm.Abort(exit_code)``.
    ``KeyboardInterrupt`` aborts too (a Ctrl-C on one rank must not hang the rest).
    """
    previous = sys.excepthook

    def _hook(exc_type, exc, tb):
        report_exception(comm, exc_type, exc, tb, stream)
        if comm is None:
            previous(exc_type, exc, tb)
            return
        time.sleep(IO_DRAIN_S)
        comm.Abort(exit_code)

    sys.excepthook = _hook


# --------------------------------------------------------------------------------------
# SIGTERM / SIGUSR1: stop at a safe point, agreed by all ranks
# --------------------------------------------------------------------------------------

STOP_SIGNALS = ("SIGTERM", "SIGUSR1")
# Ctrl-C: with more than one rank the watcher thread ends the job at once (MPI_Abort(130)),
# also from inside a collective or a GIL-releasing call, where a KeyboardInterrupt would
# wait until the call returns (as long as the slowest rank takes to reach it).
EXIT_SIGINT = 130
INTERRUPT_MESSAGE = (
    f"SIGINT (Ctrl-C) received: ending the job now (exit {EXIT_SIGINT}); no product "
    "written; a checkpoint already written, if any, is complete (radimg run CONFIG --resume)"
)
# A rank whose launcher has died ends itself (see StopSignals._watch_parent).
PARENT_POLL_S = 0.5
EXIT_ORPHANED = 1


class StopSignals:
    """SIGTERM and SIGUSR1 (Slurm's time limit and its ``--signal=USR1@T`` early warning)
    on any rank, turned into a stop that every rank agrees on.

    Inside :meth:`deferred` (deconvolution: a checkpoint can be written) a signal only sets
    this rank's flag; the loop calls :meth:`stop_requested` at the end of each major cycle,
    an Allreduce(MAX) of the flags, so all ranks stop after the same cycle. Outside it
    (reading, gridding: nothing to save) SIGTERM ends the job at once: the rank prints why
    and calls ``comm.Abort(143)`` (128 + SIGTERM), like a process the signal killed, but
    with the reason on stderr and no rank left waiting. SIGUSR1 there only sets the flag:
    it is Slurm's early warning (``--signal=USR1@T``), sent T seconds before the limit or
    at once when the limit is shorter than T, and the run may still finish or reach its
    first checkpoint in that time.

    The signal is seen by a watcher thread through ``signal.set_wakeup_fd``, not by a Python
    handler in the main thread, so it acts within milliseconds even while the main thread is
    inside a long GIL-releasing call (numba ``nogil`` gridding, FFTW, MPI waits). Install and
    restore from the main thread (elsewhere ``install`` does nothing and no signal is seen).

    With more than one rank SIGINT (Ctrl-C) is the watcher's too: it ends the job at once
    in every stage, ``MPI_Abort(130)`` after one line (:data:`INTERRUPT_MESSAGE`), also
    while the main thread waits in a collective for a slower rank.

    With more than one rank a second thread watches the parent process (the launcher): a rank
    whose launcher has gone ends itself within :data:`PARENT_POLL_S` seconds (exit
    :data:`EXIT_ORPHANED`), instead of waiting for ever in a collective with ranks that the
    launcher took down (seen once under a loaded ``mpiexec``: two ranks re-parented to init,
    spinning in an Alltoallv after a third had failed).

    Parameters
    ----------
    comm : mpi4py communicator or None (serial: no reduction; hard stop is ``os._exit``).
    stream : text stream for the messages (default ``sys.stderr``).
    """

    def __init__(self, comm, stream=None):
        self.comm = comm
        self.rank, self.size = comm_rank_size(comm)
        self.stream = stream
        self.signum: int | None = None  # the first stop signal this rank received
        self._flag = threading.Event()
        self._deferred = threading.Event()
        self._old_handlers: dict = {}
        self._old_fd = None
        self._pipe = None
        self._thread = None
        self._parent_thread = None
        self._parent_done = threading.Event()

    # ---- set-up ---------------------------------------------------------------------

    def install(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # Python allows handlers only there; the run then ignores signals
        r, w = os.pipe()
        os.set_blocking(w, False)
        self._pipe = (r, w)
        self._old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                # A no-op Python handler: it replaces the default action (terminate) and
                # makes the C-level handler write the signal number to the wakeup fd.
                self._old_handlers[sig] = signal.signal(sig, _ignore_in_main_thread)
        if self.size > 1:
            # Ctrl-C ends the job from the watcher thread (:data:`INTERRUPT_MESSAGE`); serial
            # runs keep KeyboardInterrupt (the CLI prints "radimg: interrupted", exit 130).
            self._old_handlers[signal.SIGINT] = signal.signal(
                signal.SIGINT, _ignore_in_main_thread
            )
        self._thread = threading.Thread(target=self._watch, name="radimg-signals", daemon=True)
        self._thread.start()
        if self.size > 1:
            self._parent_thread = threading.Thread(
                target=self._watch_parent, args=(os.getppid(),), name="radimg-parent",
                daemon=True,
            )
            self._parent_thread.start()
        return self

    def restore(self) -> None:
        """Put back the previous handlers and wakeup fd; stops the watcher thread."""
        if self._pipe is None:
            return
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(self._old_fd if self._old_fd is not None else -1)
        os.close(self._pipe[1])  # the watcher reads EOF and ends
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        self._parent_done.set()
        if self._parent_thread is not None:
            self._parent_thread.join(timeout=1.0)
        os.close(self._pipe[0])
        self._pipe = None

    def __enter__(self) -> StopSignals:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()

    # ---- use ------------------------------------------------------------------------

    def defer(self, on: bool = True) -> None:
        """From now on (``on``) a stop signal only sets the flag (see :meth:`stop_requested`);
        ``defer(False)`` makes it stop the job at once again."""
        if on:
            self._deferred.set()
        else:
            self._deferred.clear()

    @contextmanager
    def deferred(self):
        """:meth:`defer` for the duration of a block."""
        self.defer(True)
        try:
            yield self
        finally:
            self.defer(False)

    @property
    def received(self) -> bool:
        """Whether this rank has received a stop signal (local, no communication)."""
        return self._flag.is_set()

    def stop_requested(self) -> bool:
        """Collective: True on every rank when any rank has received a stop signal (then
        :meth:`signal_name` names the same signal everywhere)."""
        local = int(self.signum or 0) if self._flag.is_set() else 0
        if self.comm is not None:
            from mpi4py import MPI

            local = int(self.comm.allreduce(local, op=MPI.MAX))
        if local:
            self._agreed = local
        return bool(local)

    def signal_name(self) -> str:
        """The stop signal agreed by the last :meth:`stop_requested` (else this rank's)."""
        num = getattr(self, "_agreed", None) or self.signum
        return signal.Signals(num).name if num else "a stop signal"

    # ---- internals ------------------------------------------------------------------

    def _say(self, msg: str) -> None:
        out = self.stream if self.stream is not None else sys.stderr
        try:
            out.write(f"[rank {self.rank}/{self.size}] {msg}\n")
            out.flush()
        except Exception:  # noqa: BLE001 - reporting must not prevent stopping
            pass

    def _watch(self) -> None:
        wanted = {int(s) for s in self._old_handlers}
        r = self._pipe[0]
        while True:
            try:
                data = os.read(r, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum not in wanted:
                    continue
                if signum == signal.SIGINT:
                    self._interrupt()
                    continue
                if self.signum is None:
                    self.signum = signum
                name = signal.Signals(signum).name
                if self._deferred.is_set():
                    if not self._flag.is_set():
                        self._say(
                            f"{name} received: stopping after the current major cycle "
                            "with a checkpoint"
                        )
                    self._flag.set()
                elif signum == getattr(signal, "SIGUSR1", None):
                    # An early warning (sbatch --signal=USR1@T), not a kill: carry on, and
                    # stop at the first checkpoint if deconvolution is reached in time.
                    if not self._flag.is_set():
                        self._say(
                            f"{name} received: carrying on; deconvolution will stop at its "
                            "first checkpoint"
                        )
                    self._flag.set()
                else:
                    self._hard_stop(signum, name)

    def _watch_parent(self, ppid: int) -> None:
        """End this rank when its launcher (hydra's proxy, slurmstepd) has gone.

        The launcher is what kills the other ranks when one fails; if it dies first (killed,
        or ended by a failure elsewhere in the job) the ranks it leaves behind are
        re-parented and would wait in their next collective for ranks that no longer exist,
        spinning a core each, forever. Polled every :data:`PARENT_POLL_S` seconds.
        """
        while not self._parent_done.wait(PARENT_POLL_S):
            if os.getppid() != ppid:
                self._say(
                    f"the launcher (parent process {ppid}) has gone: ending this rank "
                    f"(exit {EXIT_ORPHANED}) rather than wait for ranks that may be gone"
                )
                os._exit(EXIT_ORPHANED)

    def _interrupt(self) -> None:
        """Ctrl-C (size > 1 only): end the whole job now with ``MPI_Abort(130)``, in every
        stage. A terminal user who presses Ctrl-C wants the prompt back, not one more major
        cycle; the graceful stop with a checkpoint is SIGTERM's (``scancel``, ``kill``)."""
        self._say(INTERRUPT_MESSAGE)
        try:
            sys.stdout.flush()
        except Exception:  # noqa: BLE001
            pass
        time.sleep(IO_DRAIN_S)
        self.comm.Abort(EXIT_SIGINT)

    def _hard_stop(self, signum: int, name: str) -> None:
        code = 128 + signum
        self._say(
            f"{name} received before deconvolution could checkpoint: stopping now "
            f"(exit {code}); no product written, nothing to resume"
        )
        try:
            sys.stdout.flush()
        except Exception:  # noqa: BLE001
            pass
        if self.comm is None or self.size == 1:
            os._exit(code)
        time.sleep(IO_DRAIN_S)
        self.comm.Abort(code)


def _ignore_in_main_thread(signum, frame):  # noqa: ARG001 - signal handler signature
    """The watcher thread acts on stop signals; the main thread carries on."""


def mpi_op(op: str):
    from mpi4py import MPI

    ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "prod": MPI.PROD}
    try:
        return ops[op]
    except KeyError:
        raise ValueError(f"unknown reduction {op!r}; expected one of {sorted(ops)}") from None


#: Arrays are reduced in pieces of at most this many bytes: MPICH's reductions allocate
#: message-sized temporaries (measured at 2 ranks on a 57 MiB image: Allreduce +29 MiB on
#: every rank, Reduce +85 MiB on the non-root), 4 MiB pieces +2-6 MiB.
REDUCE_CHUNK_BYTES = 4 * 2**20


def _pieces(arr):
    """Flat views of a C-contiguous array, each at most :data:`REDUCE_CHUNK_BYTES`."""
    flat = arr.reshape(-1)
    step = max(1, REDUCE_CHUNK_BYTES // max(1, flat.itemsize))
    return [flat[s : s + step] for s in range(0, flat.size, step)] or [flat]


def allreduce_array(comm, arr: np.ndarray, op: str = "sum") -> np.ndarray:
    """Reduce a contiguous numpy array over ``comm`` in place and return it.

    ``comm=None`` returns ``arr`` unchanged (the serial twin). The array must be
    C-contiguous so the reduction writes straight into it; it is reduced in pieces
    (:data:`REDUCE_CHUNK_BYTES`), the same element-wise result with bounded temporaries.
    """
    if comm is None:
        return arr
    if not arr.flags.c_contiguous:
        raise ValueError("allreduce_array needs a C-contiguous array (it reduces in place)")
    from mpi4py import MPI

    mop = mpi_op(op)
    for piece in _pieces(arr):
        comm.Allreduce(MPI.IN_PLACE, piece, op=mop)
    return arr


def reduce_array(comm, arr: np.ndarray, op: str = "sum", root: int = 0):
    """Reduce a contiguous numpy array over ``comm`` onto ``root``, in place there (in
    pieces, as :func:`allreduce_array`): returns ``arr`` (the reduced array) on ``root``
    and None elsewhere (their ``arr`` is left as it was). ``comm=None`` returns ``arr``
    (the serial twin)."""
    if comm is None:
        return arr
    if not arr.flags.c_contiguous:
        raise ValueError("reduce_array needs a C-contiguous array (it reduces in place)")
    from mpi4py import MPI

    mop = mpi_op(op)
    on_root = comm.Get_rank() == root
    for piece in _pieces(arr):
        if on_root:
            comm.Reduce(MPI.IN_PLACE, piece, op=mop, root=root)
        else:
            comm.Reduce(piece, None, op=mop, root=root)
    return arr if on_root else None


def ranks_on_root_node(comm, root: int = 0) -> int:
    """How many ranks of ``comm`` share ``root``'s node (collective; 1 for ``comm=None``):
    the cores rank 0 may use while the others sleep in :func:`wait_for_root`."""
    if comm is None or comm.Get_size() == 1:
        return 1
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        here = int(local.Get_size())
        on_root = comm.bcast(here if comm.Get_rank() == root else None, root=root)
    finally:
        local.Free()
    return int(on_root)


def allreduce_scalar(comm, value, op: str = "sum", dtype=np.float64):
    """Reduce one number; returns a Python scalar of ``dtype``'s kind."""
    buf = np.array([value], dtype=dtype)
    allreduce_array(comm, buf, op)
    return buf[0].item()


class Collectives:
    """The reductions of ``comm`` as an object, for the code below ``radimg.parallel`` that
    takes them as an argument instead of importing MPI (k-means, w-stack ranges, the
    small-inversion geometry): ``allreduce(array, op)`` in place (:func:`allreduce_array`),
    ``allgather(obj)`` (a list, one entry per rank), ``parallel`` (more than one rank).
    :meth:`of` gives None for no communicator (the callee then runs serially)."""

    def __init__(self, comm):
        self.comm = comm
        self.parallel = comm_rank_size(comm)[1] > 1

    @classmethod
    def of(cls, comm):
        return None if comm is None else cls(comm)

    def allreduce(self, arr: np.ndarray, op: str = "sum") -> np.ndarray:
        return allreduce_array(self.comm, arr, op)

    def allgather(self, obj) -> list:
        return self.comm.allgather(obj) if self.parallel else [obj]


def wait_for_root(comm, root: int = 0, poll_s: float = 0.002) -> None:
    """Collective: returns on every rank once ``root`` has called it, the other ranks
    sleeping in ``poll_s`` steps meanwhile instead of spinning.

    A blocking MPI call (MPICH's ``bcast``, ``barrier``) busy-polls: a rank that waits
    there for rank 0's minor cycle burns a core all the while (measured: 0.58 s of CPU
    while rank 0 did 0.58 s of FFTs), which on a node with more ranks or threads than
    cores is taken from the rank doing the work. Call it just before the collective that
    hands over rank 0's result. Serial (``comm`` None or one rank): returns at once.
    """
    if comm is None or comm.Get_size() == 1:
        return
    req = comm.Ibarrier()
    if comm.Get_rank() == root:
        req.Wait()  # root arrives last: the others have posted theirs
        return
    while not req.Test():
        time.sleep(poll_s)


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
