"""``radimg run`` with ``gridder.device: gpu`` under ``mpiexec -n N`` on the CUDA simulator.

The GPU run reports the CPU's distributed scheme (``load_balance_json`` scheme ``balanced``,
max/mean load <= 1.01, the same per-rank loads as the CPU run) and its images equal the CPU
run's to 1e-5 of the peak (single precision), in mode ``wstack-wproject`` with CLEAN.

Run by tests/test_gpu.py: ``NUMBA_ENABLE_CUDASIM=1 RADIMG_GPU_SIMULATOR=1 mpiexec -n N
python <this file> DIR``; rank 0 prints ``GPU-PIPELINE-OK ranks=N`` and the figures.
"""

import json
import pathlib
import sys

import h5py
import numpy as np
from mpi4py import MPI

from radimg.config import validate
from radimg.gpu._device import simulator_allowed_by_env, simulator_enabled
from radimg.pipeline import run

assert simulator_enabled() and simulator_allowed_by_env(), "needs the CUDA simulator"
comm = MPI.COMM_WORLD
tmp = pathlib.Path(sys.argv[1])
NPIX = 32


def config(name, device, simulate):
    return validate({
        "input": {"simulate": simulate, "ms": str(tmp / "sim.ms")},
        "simulate": {"telescope": "vla", "ra_deg": 0.0, "dec_deg": 34.0, "freq_hz": 7.5e7,
                     "nchan": 1, "chan_width_hz": 1.0e6, "ha_start_h": -0.01,
                     "ha_stop_h": 0.01, "integration_s": 120.0, "noise_jy": 0.0, "seed": 3,
                     "sources": [{"ra_deg": 0.0, "dec_deg": 34.0, "flux_jy": 2.0},
                                 {"ra_deg": 0.6, "dec_deg": 34.4, "flux_jy": 1.0}]},
        "image": {"npix": NPIX, "cell_arcsec": 240.0, "weighting": "natural"},
        "wterm": {"mode": "wstack-wproject", "epsilon": 1.0e-3},
        "gridder": {"device": device, "precision": "single", "nthreads": 1},
        "deconvolution": {"algorithm": "clean", "niter": 20, "gain": 0.2, "mgain": 0.5,
                          "nmajor": 2, "predict": "operator"},
        "output": {"path": str(tmp / f"{name}.h5"), "overwrite": True, "checkpoint": False},
    })


def product(name):
    with h5py.File(tmp / f"{name}.h5", "r") as f:
        return ({k: f["images"][k][...] for k in f["images"]},
                json.loads(f["run"].attrs["load_balance_json"]))


run(config("cpu", "cpu", True), verbose=0)  # also writes the MS
run(config("gpu", "gpu", False), verbose=0)
if comm.rank == 0:
    cpu, lb_cpu = product("cpu")
    gpu, lb = product("gpu")
    assert lb["scheme"] == "balanced" and lb["n_ranks"] == comm.size, lb
    assert lb["max_over_mean"] <= 1.01, lb
    assert lb["load"] == lb_cpu["load"] and lb["nrow"] == lb_cpu["nrow"], (lb, lb_cpu)
    worst = 0.0
    for name in cpu:
        a, b = cpu[name], gpu[name]
        err = float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-30))
        assert err <= 1e-5, (name, err)
        worst = max(worst, err)
    assert np.abs(cpu["model"]).max() > 0
    print(f"GPU-PIPELINE-OK ranks={comm.size} max/mean load={lb['max_over_mean']:.4f} "
          f"loads={lb['load']} worst={worst:.1e}")
