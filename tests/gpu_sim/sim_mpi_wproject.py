"""GPU w-projection under ``mpiexec -n 2`` on the numba CUDA simulator: with ``comm`` the
operator takes the global w-stacks and kernel tables (radimg.parallel.operator.wproject_stacks,
as the CPU distributed operator does), so the summed image and the predicted samples equal a
one-rank operator on all samples to summation order. Without ``comm`` each rank fits its own
stacks; this script shows those differ here (rank 0 holds the small |w|, rank 1 the large), so
the equality is not an accident of the data.

Run by tests/test_gpu.py: ``NUMBA_ENABLE_CUDASIM=1 mpiexec -n 2 python <this file>``; rank 0
prints ``WPROJECT-RANKS-OK`` and the figures.
"""

import numpy as np
from mpi4py import MPI

from radimg.gpu._device import simulator_enabled
from radimg.gpu.operator import make_operator

assert simulator_enabled(), "needs NUMBA_ENABLE_CUDASIM=1"
comm = MPI.COMM_WORLD
NPIX, CELL, NROW = 16, 2e-2, 40
rng = np.random.default_rng(42)
uvw = rng.uniform(-1, 1, (NROW, 3)) * np.array([300.0, 300.0, 100.0])
uvw = uvw[np.argsort(np.abs(uvw[:, 2]))]  # rows by |w|: each rank gets a different w range
freq = np.array([1.0e8, 1.2e8])
vis = rng.normal(size=(NROW, 2)) + 1j * rng.normal(size=(NROW, 2))
wgt = rng.uniform(0.5, 1.5, (NROW, 2))
model = rng.normal(size=(NPIX, NPIX))
rows = np.array_split(np.arange(NROW), comm.size)[comm.rank]
kw = dict(mode="wstack-wproject", epsilon=1e-4, precision="double", nstacks=2, block=16)

serial = make_operator(uvw, freq, NPIX, NPIX, CELL, comm=MPI.COMM_SELF, **kw)  # all samples
dist = make_operator(uvw[rows], freq, NPIX, NPIX, CELL, comm=comm, **kw)
local = make_operator(uvw[rows], freq, NPIX, NPIX, CELL, **kw)  # this rank's own stacks

assert np.allclose(dist.centres, serial.centres, rtol=1e-12, atol=0), (dist.centres,
                                                                        serial.centres)
img = np.asarray(dist.hdot(vis[rows], wgt[rows]), dtype=np.float64)
tot = np.empty_like(img)
comm.Allreduce(img, tot, op=MPI.SUM)
ref = serial.hdot(vis, wgt)
rel_img = float(np.abs(tot - ref).max() / np.abs(ref).max())
pred = dist.dot(model)
pref = serial.dot(model)[rows]
rel_pred = float(np.abs(pred - pref).max() / np.abs(pref).max())
assert rel_img < 1e-10 and rel_pred < 1e-10, (rel_img, rel_pred)

limg = np.asarray(local.hdot(vis[rows], wgt[rows]), dtype=np.float64)
ltot = np.empty_like(limg)
comm.Allreduce(limg, ltot, op=MPI.SUM)
rel_local = float(np.abs(ltot - ref).max() / np.abs(ref).max())
centres = comm.gather(local.centres, root=0)
if comm.rank == 0:
    assert comm.size == 1 or not np.allclose(centres[0], centres[-1]), centres
    print(f"WPROJECT-RANKS-OK ranks={comm.size} rel_img={rel_img:.2e} rel_pred={rel_pred:.2e} "
          f"rel_local_stacks={rel_local:.2e}")
