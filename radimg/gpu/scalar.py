"""The CUDA build of radimg.kernels.scalar: the same scalar functions as the CPU kernels,
compiled with ``numba.cuda.jit(device=True)`` (None when numba.cuda is not importable)."""

from __future__ import annotations

from radimg.kernels.scalar import build

try:  # guarded: radimg.gpu must import without numba.cuda
    from numba import cuda
except Exception:  # pragma: no cover
    cuda = None

__all__ = ["DEVICE"]

#: ``radimg.kernels.scalar.build(cuda.jit(device=True))``. numba-cuda compiles a device
#: function when a kernel calling it is compiled, for that kernel's target.
DEVICE = build(cuda.jit(device=True)) if cuda is not None else None
