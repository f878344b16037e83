"""GPU availability, device selection (one rank per GPU) and the array module.

Nothing here imports cupy or numba.cuda at module import time, so ``import radimg.gpu`` works
on machines without either. Two ways to run the CUDA kernels exist:

- a real GPU: cupy for arrays, FFTs and vectorised glue; numba.cuda for the gridding kernels;
- the numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported): the same
  kernels interpreted on the CPU with numpy arrays standing in for device arrays. Tests only;
  it is ~1e4 times slower than the CPU gridder.
"""

from __future__ import annotations

import os

__all__ = [
    "GpuUnavailableError",
    "check_gpu_available",
    "gpu_available",
    "simulator_enabled",
    "simulator_allowed_by_env",
    "SIMULATOR_ENV",
    "local_rank_from_env",
    "device_for_rank",
    "select_device",
    "get_xp",
    "LOCAL_RANK_VARS",
    "TransferStats",
    "to_device",
    "to_host",
    "is_host_array",
]

# Launchers' local-rank variables, most specific first: Slurm (srun), Open MPI, MPICH/Hydra
# and Intel MPI, MVAPICH2, PMIx.
LOCAL_RANK_VARS = (
    "SLURM_LOCALID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",
    "MV2_COMM_WORLD_LOCAL_RANK",
    "PMIX_LOCAL_RANK",
)


class GpuUnavailableError(RuntimeError):
    """``gridder.device: gpu`` was asked for, but no usable CUDA GPU is present."""


def simulator_enabled() -> bool:
    """True when numba's CUDA simulator is on (read from numba's config if numba is loaded)."""
    try:
        from numba.core import config

        return bool(config.ENABLE_CUDASIM)
    except Exception:  # pragma: no cover - numba is a hard dependency
        return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


SIMULATOR_ENV = "RADIMG_GPU_SIMULATOR"


def simulator_allowed_by_env() -> bool:
    """True when ``RADIMG_GPU_SIMULATOR=1``: tests run the whole pipeline with
    ``gridder.device: gpu`` on the numba CUDA simulator (never set this in production)."""
    return os.environ.get(SIMULATOR_ENV, "0") == "1"


def _cupy_status():
    """(usable, reason). Usable means cupy imports *and* a CUDA device answers: an installed
    cupy wheel without a driver or device imports fine, so import success proves nothing."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA library load
        return False, f"cupy is not importable ({type(exc).__name__}: {exc})"
    try:
        ok = bool(cupy.cuda.is_available())
    except Exception as exc:  # pragma: no cover - driver errors
        return False, f"cupy.cuda.is_available() failed ({type(exc).__name__}: {exc})"
    if not ok:
        return False, "cupy.cuda.is_available() is False (no CUDA driver or no visible device)"
    return True, ""


def _numba_cuda_status():
    try:
        from numba import cuda
    except Exception as exc:
        return False, f"numba.cuda is not importable ({type(exc).__name__}: {exc})"
    try:
        return bool(cuda.is_available()), "numba.cuda.is_available() is False"
    except Exception as exc:  # pragma: no cover
        return False, f"numba.cuda.is_available() failed ({type(exc).__name__}: {exc})"


def gpu_available() -> bool:
    """True when a real CUDA GPU is usable by both cupy and numba.cuda."""
    if simulator_enabled():
        return False
    ok, _ = _cupy_status()
    if not ok:
        return False
    return _numba_cuda_status()[0]


def check_gpu_available(*, allow_simulator=False):
    """Raise :class:`GpuUnavailableError` with the reason and the fix unless a GPU is usable.

    Called at start-up when the config says ``gridder.device: gpu``, so a job on a node without
    a GPU stops at once instead of after reading its data. ``allow_simulator`` accepts the numba
    CUDA simulator (tests).
    """
    if (allow_simulator or simulator_allowed_by_env()) and simulator_enabled():
        return "simulator"
    if simulator_enabled():
        reason = (f"NUMBA_ENABLE_CUDASIM is set (the CUDA simulator is for tests only; they "
                  f"also set {SIMULATOR_ENV}=1)")
    else:
        ok, reason = _cupy_status()
        if ok:
            ok, reason = _numba_cuda_status()
            if ok:
                return "cuda"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    extra = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    raise GpuUnavailableError(
        "gridder.device: gpu was requested but no usable CUDA GPU was found: "
        f"{reason}{extra}. Run on a GPU node with `pip install radimg[gpu]` "
        "(cupy-cuda12x, numba-cuda), or set gridder.device: cpu."
    )


def local_rank_from_env(env=None):
    """This process's rank among the ranks on its node, from the launcher's variables (or
    None when no launcher variable is set). Pure: pass ``env`` to test it."""
    env = os.environ if env is None else env
    for name in LOCAL_RANK_VARS:
        val = env.get(name)
        if val is not None and str(val).strip().lstrip("-").isdigit():
            return int(val)
    return None


def device_for_rank(local_rank, ndevices):
    """GPU index for a local rank: one rank per GPU, ranks beyond the GPU count share them
    round-robin (which the plan should avoid). Pure."""
    if ndevices < 1:
        raise GpuUnavailableError("no CUDA devices visible")
    return 0 if local_rank is None else int(local_rank) % int(ndevices)


def select_device(local_rank=None, env=None):
    """Make the GPU of this rank current for cupy and numba.cuda; returns its index.

    ``local_rank`` defaults to :func:`local_rank_from_env`. A launcher that already narrows
    ``CUDA_VISIBLE_DEVICES`` to one GPU per rank leaves one visible device, which is then used.
    """
    if check_gpu_available() == "simulator":
        return 0  # one simulated device (tests)
    import cupy
    from numba import cuda

    if local_rank is None:
        local_rank = local_rank_from_env(env)
    dev = device_for_rank(local_rank, cupy.cuda.runtime.getDeviceCount())
    cupy.cuda.Device(dev).use()
    cuda.select_device(dev)
    return dev


def get_xp(*, allow_simulator=True):
    """The array module for device arrays: cupy on a GPU, numpy under the simulator."""
    mode = check_gpu_available(allow_simulator=allow_simulator)
    if mode == "simulator":
        import numpy

        return numpy
    import cupy

    return cupy


class TransferStats:
    """Host <-> device bytes, per call and in total (the VLASS memo's bottleneck, made visible).

    ``begin()`` starts a call; ``h2d(x)`` / ``d2h(x)`` count an array's bytes.
    """

    def __init__(self):
        self.total_h2d = 0
        self.total_d2h = 0
        self.call_h2d = 0
        self.call_d2h = 0
        self.ncalls = 0

    def begin(self):
        self.call_h2d = 0
        self.call_d2h = 0
        self.ncalls += 1

    def h2d(self, nbytes):
        self.call_h2d += int(nbytes)
        self.total_h2d += int(nbytes)

    def d2h(self, nbytes):
        self.call_d2h += int(nbytes)
        self.total_d2h += int(nbytes)

    def as_dict(self):
        return {
            "h2d_bytes_last_call": self.call_h2d,
            "d2h_bytes_last_call": self.call_d2h,
            "h2d_bytes_total": self.total_h2d,
            "d2h_bytes_total": self.total_d2h,
            "ncalls": self.ncalls,
        }


def is_host_array(x, xp):
    """True when ``x`` lives in host memory from the point of view of ``xp``'s device.

    Under the simulator (xp is numpy) every array the caller passes is treated as host memory,
    so transfer counts match what a real GPU would move.
    """
    import numpy

    if xp is numpy:
        return True
    return isinstance(x, numpy.ndarray) or numpy.isscalar(x)


def to_device(x, xp, stats=None, dtype=None):
    """Copy a host array to the device (counted); device arrays pass through (cast if asked)."""
    import numpy

    if is_host_array(x, xp):
        h = numpy.ascontiguousarray(x, dtype=dtype)
        if stats is not None:
            stats.h2d(h.nbytes)
        return h.copy() if xp is numpy else xp.asarray(h)
    x = xp.ascontiguousarray(x)
    return x if dtype is None else x.astype(dtype, copy=False)


def to_host(x, xp, stats=None):
    """Copy a device array to a host numpy array (counted)."""
    import numpy

    if xp is numpy:
        h = numpy.array(x, copy=True)
    else:
        h = xp.asnumpy(x)
    if stats is not None:
        stats.h2d(0)
        stats.d2h(h.nbytes)
    return h
