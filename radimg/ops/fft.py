"""FFT registry (mpi4py-fft ``libfft.py`` style): ``{"scipy", "fftw", "numpy"}``, lazy imports.

Every backend offers the same two *unnormalised* in-place-or-not 2-D complex transforms:

- ``forward(a)``: ``A[k] = sum_j a[j] exp(-2 pi i j k / N)``
- ``backward(a)``: ``a[j] = sum_k A[k] exp(+2 pi i j k / N)`` (no 1/N)
- ``forward1(a, axis)`` / ``backward1(a, axis)``: the same along one axis (used to skip
  empty grid rows and unneeded image columns)

``get_fft("auto", nthreads)`` returns a chooser that times the candidates on the first real
calls for each (shape, dtype, direction) — one call per candidate, no extra work — and uses the
fastest from then on.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["get_fft", "available", "FFT_BACKENDS"]

PLAN_TIME_LIMIT = 1.0  # seconds of FFTW_MEASURE planning per transform

FFT_BACKENDS = ("scipy", "fftw", "numpy")


class _Scipy:
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


class _Numpy:
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


class _Fftw:
    """pyfftw with one plan per (shape, dtype, direction), reused. ``FFTW_ESTIMATE`` by default
    (planning at 8192^2 with ``FFTW_MEASURE`` takes long); ``measure=True`` (registry name
    ``"fftw-measure"``) plans with ``FFTW_MEASURE`` and keeps the wisdom in a file
    (:func:`wisdom_path`), so each shape is measured once per machine."""

    name = "fftw"

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
        # Measured planning stops after PLAN_TIME_LIMIT s per plan (5760^2 took 5 s a plan
        # unbounded); the best plan found so far is used and remembered as wisdom.
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
        if overwrite and not a.flags.c_contiguous and a.ndim == 2 and all(
                st > 0 for st in a.strides):
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


_REGISTRY = {"scipy": _Scipy, "fftw": _Fftw, "numpy": _Numpy}


def available():
    """Names of the backends that import here."""
    out = []
    for name in FFT_BACKENDS:
        try:
            _REGISTRY[name](1)
        except ImportError:
            continue
        out.append(name)
    return out


class _Auto:
    """Tries each candidate once per (shape, dtype, direction) on real calls, then keeps the
    fastest."""

    name = "auto"

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


def get_fft(name="auto", nthreads=1):
    """An FFT backend object with ``forward(a, overwrite=False)`` / ``backward(...)``.

    Parameters
    ----------
    name : {"auto", "scipy", "fftw", "numpy", "fftw-measure"}
    nthreads : int
    """
    if name == "auto":
        return _Auto(nthreads)
    if name == "fftw-measure":
        return _Fftw(nthreads, measure=True)
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown FFT backend {name!r}; choose from auto, "
                         + ", ".join(FFT_BACKENDS)) from None
    return cls(nthreads)
