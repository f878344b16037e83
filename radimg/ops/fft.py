"""FFT registry (mpi4py-fft ``libfft.py`` style): ``{"ducc0", "scipy", "fftw", "numpy"}``, lazy
imports.

Every backend offers the same two *unnormalised* in-place-or-not 2-D complex transforms:

- ``forward(a)``: ``A[k] = sum_j a[j] exp(-2 pi i j k / N)``
- ``backward(a)``: ``a[j] = sum_k A[k] exp(+2 pi i j k / N)`` (no 1/N)
- ``forward1(a, axis)`` / ``backward1(a, axis)``: the same along one axis (used to skip
  empty grid rows and unneeded image columns)

and ``rows(grid, r0, r1, forward)`` / ``cols(grid, c0, c1, forward)``: the same in place on a
run of rows / columns of a C-contiguous 2-D grid (the pruned w-plane transforms).

Which backend (issue #13 item 5): :func:`resolve` turns ``"auto"`` into one concrete name,
decided on rank 0 and broadcast, so ranks never differ in backend (and hence in rounding):
ducc0's FFT when it imports on every rank (no planning; it transforms several columns or rows
at once in SIMD registers: on the real-MWA job's 4320 x 3888 single-precision w-planes its
pruned row and column passes take 19 and 24 ms against FFTW's measured plans' 31 and 36 ms,
scipy's 34 ms columns), else FFTW with measured plans when pyfftw imports on every rank and
the transforms of one operator application are large enough (:data:`MEASURE_WORK`), else
scipy's pocketfft. FFTW
plans are made once per (shape, strides, alignment, direction) and reused for every plane,
stack, major cycle; their wisdom is kept on disk (:func:`wisdom_path`) for later runs and, in
a distributed operator, measured on rank 0 alone and broadcast (:func:`share_wisdom`), so
every rank runs bitwise the same plans and only one rank pays for planning. Row transforms
go in blocks of :func:`row_block` rows: one plan serves every run of rows, and a 32-row block
of a 5760-point grid stays in cache (measured 2x faster than one batch over all rows).
``get_fft("timed")`` is the old per-call chooser (times each candidate on real calls); it
can pick differently on different ranks, so the operators never use it.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np

__all__ = ["get_fft", "available", "good_size", "FFT_BACKENDS"]

# Seconds of FFTW_MEASURE planning per transform at most. Measured on the 5760^2 grid of
# the real-MWA job: a 1 s limit left plans 1.5-3x slower than unlimited planning (which
# takes 1-2 s a plan, 6 s for the whole set, once: the wisdom is kept).
PLAN_TIME_LIMIT = 30.0
#: Transforms per operator application (planes x padded cells) above which "auto" takes
#: FFTW with measured plans (their planning, a few seconds once per geometry, then pays).
MEASURE_WORK = 1e8

FFT_BACKENDS = ("ducc0", "scipy", "fftw", "numpy")


@functools.lru_cache(maxsize=1024)
def good_size(n, *, even=True, minimum=16):
    """The FFT length rule of radimg: the smallest ``2^a 3^b 5^c >= ceil(n)`` (and
    ``>= minimum``), even unless ``even=False``.

    Every padded grid (both wide-field operators, the small-inversion layer, the cost
    models of ``radimg plan`` and ``wterm.mode: auto``) uses the defaults: even so the
    grid centre is a cell and ``n // 2`` shifts are exact. Factors 7 and 11 are left out:
    FFTW (the backend for large transforms) is up to 1.5x slower per point on them
    (measured at ~1100 points). The deconvolution's cyclic convolutions pass
    ``even=False, minimum=1`` (any 5-smooth length at least as long as needed).
    """
    n = max(int(math.ceil(n)), int(minimum), 1)
    while True:
        m = n
        for f in (2, 3, 5):
            while m % f == 0:
                m //= f
        if m == 1 and (n % 2 == 0 or not even):
            return n
        n += 1


def row_block(n):
    """Rows per FFTW row transform for a grid of ``n`` rows: the largest of 32, 16, 8 that
    divides ``n`` (so blocks never need a second plan for a remainder), else 32."""
    for b in (32, 16, 8):
        if n % b == 0:
            return b
    return 32


class _Runs:
    """``rows`` / ``cols``: in-place 1-D transforms of a run of rows / columns."""

    #: ``rows`` transforms exactly the rows asked for (FFTW's blocks may take more)
    exact_rows = True

    def _inplace(self, view, axis, forward):
        f = self.forward1 if forward else self.backward1
        res = f(view, axis, overwrite=True)
        if not np.shares_memory(res, view):
            view[...] = res

    def rows(self, grid, r0, r1, forward):
        """Unnormalised 1-D FFT along axis 1 of ``grid[r0:r1]``, in place."""
        if r1 > r0:
            self._inplace(grid[r0:r1], 1, forward)

    def cols(self, grid, c0, c1, forward):
        """Unnormalised 1-D FFT along axis 0 of ``grid[:, c0:c1]``, in place."""
        if c1 > c0:
            self._inplace(grid[:, c0:c1], 0, forward)


class _Scipy(_Runs):
    name = "scipy"

    def __init__(self, nthreads=1):
        import scipy.fft

        self._fft = scipy.fft
        self.nthreads = max(1, int(nthreads))

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def forward(self, a, overwrite=False):
        return self._fft.fft2(a, workers=self.nthreads, overwrite_x=overwrite)

    def backward(self, a, overwrite=False):
        return self._fft.ifft2(a, norm="forward", workers=self.nthreads, overwrite_x=overwrite)

    def forward1(self, a, axis, overwrite=False):
        return self._fft.fft(a, axis=axis, workers=self.nthreads, overwrite_x=overwrite)

    def backward1(self, a, axis, overwrite=False):
        return self._fft.ifft(a, axis=axis, norm="forward", workers=self.nthreads,
                              overwrite_x=overwrite)


class _Ducc(_Runs):
    """ducc0.fft (the C++ pocketfft successor ducc0.wgridder uses): 1-D passes over many rows
    or columns at once, vectorised across them; strided views are transformed in place."""

    name = "ducc0"

    def __init__(self, nthreads=1):
        import ducc0.fft

        self._fft = ducc0.fft
        self.nthreads = max(1, int(nthreads))

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def _c2c(self, a, axes, forward, overwrite):
        a = np.asarray(a)
        out = a if overwrite and a.dtype.kind == "c" else None
        return self._fft.c2c(a, axes=axes, forward=forward, out=out, nthreads=self.nthreads)

    def forward(self, a, overwrite=False):
        return self._c2c(a, (-2, -1), True, overwrite)

    def backward(self, a, overwrite=False):
        return self._c2c(a, (-2, -1), False, overwrite)

    def forward1(self, a, axis, overwrite=False):
        return self._c2c(a, (axis,), True, overwrite)

    def backward1(self, a, axis, overwrite=False):
        return self._c2c(a, (axis,), False, overwrite)


class _Numpy(_Runs):
    name = "numpy"

    def __init__(self, nthreads=1):
        self.nthreads = 1

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def forward(self, a, overwrite=False):
        return np.fft.fft2(a).astype(a.dtype, copy=False)

    def backward(self, a, overwrite=False):
        return np.fft.ifft2(a, norm="forward").astype(a.dtype, copy=False)

    def forward1(self, a, axis, overwrite=False):
        return np.fft.fft(a, axis=axis).astype(a.dtype, copy=False)

    def backward1(self, a, axis, overwrite=False):
        return np.fft.ifft(a, axis=axis, norm="forward").astype(a.dtype, copy=False)


class _Fftw(_Runs):
    """pyfftw with one plan per (shape, dtype, direction), reused. ``FFTW_ESTIMATE`` by default
    (planning at 8192^2 with ``FFTW_MEASURE`` takes long); ``measure=True`` (registry name
    ``"fftw-measure"``) plans with ``FFTW_MEASURE`` and keeps the wisdom in a file
    (:func:`wisdom_path`), so each shape is measured once per machine."""

    name = "fftw"
    exact_rows = False  # rows in aligned blocks (see rows)

    def __init__(self, nthreads=1, flags=("FFTW_ESTIMATE",), measure=False):
        import pyfftw

        self._pyfftw = pyfftw
        self.nthreads = max(1, int(nthreads))
        self.measure = bool(measure)
        self.flags = ("FFTW_MEASURE",) if self.measure else tuple(flags)
        if self.measure:
            self.name = "fftw-measure"
            _load_wisdom(pyfftw)
        self._plans = {}
        # True while a caller plans on arrays whose contents may be destroyed (no scratch
        # copy of a strided view's whole span: 265 MB for a column slab of a 5760^2 grid)
        self.plan_in_place = False
        # Measured planning stops after PLAN_TIME_LIMIT s per plan at most (a bound for
        # pathological sizes; see the constant); the plan is remembered as wisdom.
        self._limit = {"planning_timelimit": PLAN_TIME_LIMIT} if self.measure else {}

    def empty(self, shape, dtype):
        return self._pyfftw.empty_aligned(shape, dtype=dtype)

    def _plan(self, shape, dtype, direction, axes=(-2, -1)):
        key = (shape, np.dtype(dtype).str, direction, axes)
        plan = self._plans.get(key)
        if plan is None:
            buf = self._pyfftw.empty_aligned(shape, dtype=dtype)
            t0 = time.perf_counter()
            plan = self._pyfftw.FFTW(buf, buf, axes=axes, direction=direction,
                                     flags=self.flags + ("FFTW_DESTROY_INPUT",),
                                     threads=self.nthreads, **self._limit)
            self._plans[key] = plan
            if self.measure and time.perf_counter() - t0 > 0.05:
                _save_wisdom(self._pyfftw)
        return plan

    def _strided_plan(self, a, direction, axes):
        """Plan for an arbitrary (strided) view ``a`` with its strides and alignment, made on
        scratch memory of the same layout (planning may overwrite its arrays)."""
        key = (a.shape, a.strides, a.dtype.str, direction, axes, a.ctypes.data % 64)
        plan = self._plans.get(key)
        if plan is None:
            if self.plan_in_place:  # the caller's array may be overwritten (prepare passes)
                scratch = a
            else:
                span = sum((n - 1) * st for n, st in zip(a.shape, a.strides)) + a.itemsize
                raw = self._pyfftw.empty_aligned(span + 64, dtype=np.uint8, n=64)
                off = a.ctypes.data % 64
                scratch = np.lib.stride_tricks.as_strided(
                    raw[off : off + span].view(a.dtype), shape=a.shape, strides=a.strides)
            t0 = time.perf_counter()
            plan = self._pyfftw.FFTW(scratch, scratch, axes=axes, direction=direction,
                                     flags=self.flags + ("FFTW_DESTROY_INPUT",),
                                     threads=self.nthreads, **self._limit)
            self._plans[key] = plan
            if self.measure and time.perf_counter() - t0 > 0.05:
                _save_wisdom(self._pyfftw)
        return plan

    def _run(self, a, direction, overwrite, axes=(-2, -1)):
        if overwrite and a.ndim == 2 and all(st > 0 for st in a.strides):
            plan = self._strided_plan(a, direction, axes)  # in place on the view
            plan.update_arrays(a, a)
            plan.execute()
            return a
        a = np.ascontiguousarray(a)
        plan = self._plan(a.shape, a.dtype, direction, axes)
        if not overwrite:
            a = a.copy()
        if (a.flags.c_contiguous and self._pyfftw.is_byte_aligned(a, plan.input_alignment)):
            plan.update_arrays(a, a)
            plan.execute()
            return a
        return plan(a, normalise_idft=False).copy()

    def forward(self, a, overwrite=False):
        return self._run(a, "FFTW_FORWARD", overwrite)

    def backward(self, a, overwrite=False):
        return self._run(a, "FFTW_BACKWARD", overwrite)

    def forward1(self, a, axis, overwrite=False):
        return self._run(a, "FFTW_FORWARD", overwrite, (axis % a.ndim,))

    def backward1(self, a, axis, overwrite=False):
        return self._run(a, "FFTW_BACKWARD", overwrite, (axis % a.ndim,))

    def rows(self, grid, r0, r1, forward):
        """As :meth:`_Runs.rows`, in blocks of :func:`row_block` rows aligned to multiples of
        the block (one plan for every run; rows of the blocks outside ``[r0, r1)`` are
        transformed too, harmless where the caller leaves them undefined or zero)."""
        if r1 <= r0:
            return
        n = grid.shape[0]
        b = row_block(n)
        direction = "FFTW_FORWARD" if forward else "FFTW_BACKWARD"
        for s0 in range((r0 // b) * b, r1, b):
            v = grid[s0 : min(s0 + b, n)]
            plan = self._strided_plan(v, direction, (1,))
            plan.update_arrays(v, v)
            plan.execute()

    def cols(self, grid, c0, c1, forward):
        if c1 > c0:
            v = grid[:, c0:c1]
            plan = self._strided_plan(v, "FFTW_FORWARD" if forward else "FFTW_BACKWARD", (0,))
            plan.update_arrays(v, v)
            plan.execute()

    def export_wisdom(self):
        return self._pyfftw.export_wisdom()

    def import_wisdom(self, wisdom):
        self._pyfftw.import_wisdom(wisdom)


def wisdom_path():
    """File holding FFTW wisdom: ``$RADIMG_FFTW_WISDOM``, else ``fftw-wisdom.pickle`` in
    ``$NUMBA_CACHE_DIR`` or ``~/.cache/radimg``."""
    import os

    env = os.environ.get("RADIMG_FFTW_WISDOM")
    if env:
        return env
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                              "radimg")
    return os.path.join(base, "fftw-wisdom.pickle")


_WISDOM_LOADED = []


def _load_wisdom(pyfftw):
    import pickle

    if _WISDOM_LOADED:
        return
    _WISDOM_LOADED.append(True)
    try:
        with open(wisdom_path(), "rb") as fh:
            pyfftw.import_wisdom(pickle.load(fh))
    except Exception:  # noqa: BLE001 - no or unreadable wisdom: plan afresh
        pass


def _save_wisdom(pyfftw):
    import os
    import pickle
    import tempfile

    path = wisdom_path()
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)))
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(pyfftw.export_wisdom(), fh)
        os.replace(tmp, path)  # atomic: concurrent ranks never read a partial file
    except OSError:
        pass


_REGISTRY = {"ducc0": _Ducc, "scipy": _Scipy, "fftw": _Fftw, "numpy": _Numpy}


def available(names=None):
    """Names of the backends that import here (of ``names``, default all)."""
    out = []
    for name in FFT_BACKENDS if names is None else names:
        try:
            _REGISTRY[name](1)
        except ImportError:
            continue
        out.append(name)
    return out


class _Auto(_Runs):
    """Tries each candidate once per (shape, dtype, direction) on real calls, then keeps the
    fastest."""

    name = "timed"

    def __init__(self, nthreads=1, candidates=("scipy", "fftw")):
        self.nthreads = nthreads
        self._backends = []
        for name in candidates:
            try:
                self._backends.append(_REGISTRY[name](nthreads))
            except ImportError:
                pass
        if not self._backends:
            self._backends.append(_Numpy(nthreads))
        self._times = {}
        self.choice = {}

    def _call(self, direction, a, overwrite, *axis):
        key = (a.shape, a.dtype.str, direction, axis)
        best = self.choice.get(key)
        if best is not None:
            return getattr(best, direction)(a, *axis, overwrite=overwrite)
        times = self._times.setdefault(key, [])
        b = self._backends[len(times)]
        t0 = time.perf_counter()
        out = getattr(b, direction)(a, *axis, overwrite=overwrite)
        times.append(time.perf_counter() - t0)
        if len(times) == len(self._backends):
            self.choice[key] = self._backends[int(np.argmin(times))]
        return out

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def forward(self, a, overwrite=False):
        return self._call("forward", a, overwrite)

    def backward(self, a, overwrite=False):
        return self._call("backward", a, overwrite)

    def forward1(self, a, axis, overwrite=False):
        return self._call("forward1", a, overwrite, axis)

    def backward1(self, a, axis, overwrite=False):
        return self._call("backward1", a, overwrite, axis)


def get_fft(name="auto", nthreads=1, work=0.0):
    """An FFT backend object with ``forward(a, overwrite=False)`` / ``backward(...)``.

    Parameters
    ----------
    name : {"auto", "ducc0", "scipy", "fftw", "numpy", "fftw-measure", "timed"}
        ``"auto"``: :func:`resolve` on this process alone (pass a name resolved over the
        communicator when several ranks must agree).
    nthreads : int
    work : float, planes x padded cells per application (for ``"auto"``)
    """
    if name == "auto":
        name = resolve("auto", work=work)
    if name == "timed":
        return _Auto(nthreads)
    if name == "fftw-measure":
        return _Fftw(nthreads, measure=True)
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown FFT backend {name!r}; choose from auto, "
                         + ", ".join(FFT_BACKENDS)) from None
    return cls(nthreads)


def resolve(name="auto", *, comm=None, work=0.0):
    """The backend name every rank uses; collective when ``comm`` (an mpi4py communicator)
    has more than one rank.

    ``"auto"``: ``"ducc0"`` when it imports on every rank, else ``"fftw-measure"`` when
    pyfftw imports on every rank and ``work`` (planes x padded cells per application)
    reaches :data:`MEASURE_WORK`, else ``"scipy"`` (pocketfft, no planning), else
    ``"numpy"``. The availability of every rank is gathered, rank 0
    decides, the name is broadcast: the same on every rank even where one rank lacks a
    library. An explicit name is returned as given (a rank without it fails when the
    backend is made).
    """
    if name != "auto":
        return name
    several = comm is not None and comm.Get_size() > 1
    # ducc0 first: when it imports everywhere (the usual case) the others are never probed
    # (importing pyfftw and scipy.fft only to rule them out cost ~0.2 s of every set-up)
    here = "ducc0" in available(("ducc0",))
    everywhere = all(comm.allgather(here)) if several else here
    if everywhere:
        return "ducc0"
    local = available()
    names = comm.gather(local, root=0) if several else [local]
    choice = None
    if not several or comm.Get_rank() == 0:
        common = set(FFT_BACKENDS).intersection(*map(set, names))
        if "ducc0" in common:
            choice = "ducc0"
        elif "fftw" in common and work >= MEASURE_WORK:
            choice = "fftw-measure"
        else:
            choice = "scipy" if "scipy" in common else "numpy"
    return comm.bcast(choice, root=0) if several else choice


def idle_wait(comm, root=0, poll_s=0.002):
    """Collective: return once ``root`` has called it; the others sleep in ``poll_s`` steps
    instead of busy-polling inside a blocking MPI call (MPICH's spin would take a core from
    ``root`` while it measures FFT plans, and distort the measurement)."""
    if comm is None or comm.Get_size() == 1:
        return
    req = comm.Ibarrier()
    if comm.Get_rank() == root:
        req.Wait()
        return
    while not req.Test():
        time.sleep(poll_s)


def share_wisdom(comm, backend, prepare, root=0):
    """Plan on ``root`` only, then give every rank its wisdom (collective).

    ``prepare()`` makes every plan the caller will use (e.g. one pass of zero transforms).
    With measured FFTW plans ``root`` runs it first while the other ranks wait idle, its
    wisdom is broadcast and imported, then the other ranks run ``prepare()`` (planning from
    wisdom is immediate and yields the same plans). Other backends plan nothing ahead.
    """
    if not getattr(backend, "measure", False):
        return  # nothing to plan ahead (scipy, numpy; FFTW_ESTIMATE plans are immediate)
    if comm is None or comm.Get_size() == 1:
        prepare()
        return
    rank = comm.Get_rank()
    if rank == root:
        prepare()
        _save_wisdom(backend._pyfftw)
    idle_wait(comm, root)
    wisdom = comm.bcast(backend.export_wisdom() if rank == root else None, root=root)
    if rank != root:
        backend.import_wisdom(wisdom)
        prepare()
