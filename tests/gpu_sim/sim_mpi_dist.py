"""The GPU operator in the distributed scheme under ``mpiexec -n N`` on the numba CUDA simulator.

For modes ``none``, ``wstack`` and ``wstack-wproject``
(:class:`radimg.parallel.gpu_operator.GpuDistributedOperator`):

- the scheme is the CPU one: the same rows on the same ranks as
  :class:`radimg.parallel.operator.DistributedOperator` and max/mean kernel load <= 1.01;
- the adjoint image (global) and the prediction of this rank's rows equal the CPU
  distributed operator's at this rank count, and the serial CPU operator's on all rows (the
  one-rank result: rank-count invariance), to 1e-10 (double) / 1e-5 (single) of the peak;
- the resident path (set_data, residual_image) gives the same residual, and after set-up a
  major cycle moves one image each way plus the staged planes of other ranks' owners.

Tiny on purpose (the simulator runs every CUDA thread as a Python thread). Rows are sorted by
|w| before they are dealt, so each rank reads a different w range and rows must move.

Run by tests/test_gpu.py: ``NUMBA_ENABLE_CUDASIM=1 mpiexec -n N python <this file>``; rank 0
prints ``GPU-DIST-OK ranks=N`` and the figures.
"""

import numpy as np
from mpi4py import MPI

from radimg.gpu._device import simulator_enabled
from radimg.ops.operator import make_operator as make_serial
from radimg.parallel.gpu_operator import GpuDistributedOperator
from radimg.parallel.operator import DistributedOperator

assert simulator_enabled(), "needs NUMBA_ENABLE_CUDASIM=1"
comm = MPI.COMM_WORLD
NPIX, CELL, NROW = 16, 2e-2, 240
rng = np.random.default_rng(7)
uvw = rng.uniform(-1, 1, (NROW, 3)) * np.array([150.0, 150.0, 60.0])
uvw = uvw[np.argsort(np.abs(uvw[:, 2]))]  # rows by |w|: each rank reads another w range
freq = np.array([1.0e8])
vis = rng.normal(size=(NROW, 1)) + 1j * rng.normal(size=(NROW, 1))
wgt = rng.uniform(0.5, 1.5, (NROW, 1))
wgt[::17] = 0.0  # flagged samples: no load, no contribution
model = rng.normal(size=(NPIX, NPIX))
mine = np.array_split(np.arange(NROW), comm.size)[comm.rank]  # the rows this rank read

# mode none has one plane: at 2-3 ranks every other rank's samples need the owner's tiles;
# single precision (1e-5) through the whole pipeline: sim_mpi_pipeline.py
# (the last case exchanges its planes in rounds of one plane each: exchange_buffer_bytes=1)
CASES = [("none", "single", 1e-5, None), ("wstack", "double", 1e-10, None),
         ("wstack-wproject", "double", 1e-10, None), ("wstack", "double", 1e-10, 1)]
lines = []
for mode, precision, tol, buf in CASES:
    kw = dict(mode=mode, epsilon=1e-3, precision=precision, nstacks=3 if mode == "wstack-wproject" else "auto",
              fft="numpy")
    dkw = {} if buf is None else {"exchange_buffer_bytes": buf}
    serial = make_serial(uvw, freq, NPIX, NPIX, CELL, weight_mask=wgt != 0, **kw)
    cpu = DistributedOperator(comm, uvw[mine], freq, wgt[mine], NPIX, NPIX, CELL, **kw, **dkw)
    gpu = GpuDistributedOperator(comm, uvw[mine], freq, wgt[mine], NPIX, NPIX, CELL, **kw,
                                 **dkw)
    if buf is not None and comm.size > 1:  # several rounds really run
        assert len(gpu._rounds) > 1, len(gpu._rounds)
    # the same scheme: the same rows here, balanced loads
    assert np.array_equal(gpu.row_id, cpu.row_id), (mode, "rows differ from the CPU scheme")
    lb = gpu.load_balance()
    assert lb == cpu.load_balance(), (lb, cpu.load_balance())
    assert lb["n_ranks"] == comm.size and lb["load_max_over_mean"] <= 1.01, lb
    rows = gpu.row_id
    v, w = gpu.redistribute_vis(vis[mine]), gpu.redistribute_vis(wgt[mine])

    def rel(a, b):
        return float(np.abs(np.asarray(a, np.complex128) - b).max() / np.abs(b).max())

    ref_img = serial.hdot(vis, wgt)
    img = gpu.hdot(v, w)
    e_img, e_cpu = rel(img, ref_img), rel(img, cpu.hdot(v, w))
    ref_vis = serial.dot(model)[rows]
    pred = gpu.dot(model)
    e_pred, e_pcpu = rel(pred, ref_vis), rel(pred, cpu.dot(model))
    # resident: one major cycle from the device-resident samples
    gpu.set_data(v, w)
    res = gpu.residual_image(model)
    e_res = rel(res, serial.hdot(vis - serial.dot(model), wgt))
    for key in ("grid_cells", "degrid_cells"):  # work per application: the same samples
        assert gpu.stats[key] == cpu.stats[key] > 0 or not gpu.nsamples, (key, mode)
    worst = max(e_img, e_cpu, e_pred, e_pcpu, e_res)
    assert worst <= tol, (mode, precision, e_img, e_cpu, e_pred, e_pcpu, e_res)
    # the GPU images are global and identical on every rank
    assert np.array_equal(comm.bcast(res, root=0), res), mode
    summary = gpu.transfer_summary()
    img_bytes = NPIX * NPIX * np.dtype(gpu.rdtype).itemsize
    assert summary["h2d_bytes_per_cycle"] >= img_bytes, summary
    if comm.size == 1:  # nothing staged: one image in, one image out
        assert summary["h2d_bytes_per_cycle"] == summary["d2h_bytes_per_cycle"] == img_bytes, (
            summary, img_bytes)
    lines.append(f"{mode}/{precision}{'' if buf is None else '/rounds'} rel={worst:.1e} "
                 f"load_max/mean="
                 f"{lb['load_max_over_mean']:.4f} planes_owned={lb['planes_owned']} "
                 f"h2d/cycle={summary['h2d_bytes_per_cycle']}")

if comm.rank == 0:
    print(f"GPU-DIST-OK ranks={comm.size} " + "; ".join(lines))
