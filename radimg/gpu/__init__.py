"""CUDA twins of radimg/kernels (numba.cuda kernels) and of the operator (cupy glue).

Importing this package needs neither cupy nor a GPU: it only exposes the availability check and
device selection. ``radimg.gpu.gridder`` (ES grid/degrid and image-plane kernels),
``radimg.gpu.wproject`` (the w-projection residual kernels of ``wstack-wproject``) and
``radimg.gpu.operator`` (the GPU measurement operators, data resident on the device) import
numba.cuda / cupy when used.
"""

from radimg.gpu._device import (
    GpuUnavailableError,
    check_gpu_available,
    device_for_rank,
    gpu_available,
    local_rank_from_env,
    select_device,
    simulator_enabled,
)

__all__ = [
    "GpuUnavailableError",
    "check_gpu_available",
    "device_for_rank",
    "gpu_available",
    "local_rank_from_env",
    "select_device",
    "simulator_enabled",
]
