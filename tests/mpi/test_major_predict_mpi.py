"""The major cycle's predict (radimg.deconv.predict.MajorPredict) on the distributed
operator under mpiexec: the cost figures and so the choice are the same on every rank and
at every rank count, and the component DFT of each rank's rows equals ``op.dot`` to epsilon
on every sample that carries weight (``dot`` leaves flagged samples 0)."""

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

N_ROWS, NPIX, FOV_DEG = 1500, 128, 22.0
FREQ = 1.0e8 + 1.0e7 * np.arange(3)


def _data(seed=5):
    rng = np.random.default_rng(seed)
    cell = np.deg2rad(FOV_DEG) / NPIX
    c = 299792458.0
    uvmax = 0.4 / cell
    uvw = np.empty((N_ROWS, 3))
    uvw[:, :2] = rng.uniform(-1, 1, (N_ROWS, 2)) * uvmax * c / FREQ[-1]
    uvw[:, 2] = rng.uniform(-300, 300, N_ROWS) * c / FREQ[-1]
    wgt = rng.uniform(0.5, 2.0, (N_ROWS, FREQ.size))
    wgt[rng.random(wgt.shape) < 0.1] = 0.0
    model = np.zeros((NPIX, NPIX))
    model[rng.integers(0, NPIX, 40), rng.integers(0, NPIX, 40)] = rng.normal(size=40)
    return uvw, wgt, model, cell


@pytest.mark.parametrize("mode", ["wstack", "wstack-wproject"])
def test_major_predict_same_choice_everywhere_and_dft_equals_dot(mode):
    from mpi4py import MPI

    from radimg.deconv.predict import MajorPredict, component_predict
    from radimg.parallel.operator import DistributedOperator

    comm = MPI.COMM_WORLD
    uvw, wgt, model, cell = _data()
    lo = comm.rank * N_ROWS // comm.size
    hi = (comm.rank + 1) * N_ROWS // comm.size
    op = DistributedOperator(comm, uvw[lo:hi], FREQ, wgt[lo:hi], NPIX, NPIX, cell,
                             epsilon=1e-6, mode=mode, precision="double")
    mp = MajorPredict(op, cell, comm=comm, dtype=np.complex128)
    assert mp.nrows == N_ROWS and mp.t_dot is not None and mp.t_dot > 0
    # the same figures on every rank (a choice that differed would deadlock op.dot)
    t_all = comm.allgather(mp.t_dot)
    assert all(t == t_all[0] for t in t_all)
    choices = [mp.use_dft(n) for n in (1, 10, 100, 10**4, 10**6)]
    assert all(c == choices for c in comm.allgather(choices))
    assert choices[0] and not choices[-1]
    # the same figures at any rank count: one rank holding every row gets the same value
    solo = DistributedOperator(MPI.COMM_SELF, uvw, FREQ, wgt, NPIX, NPIX, cell,
                               epsilon=1e-6, mode=mode, precision="double")
    assert MajorPredict(solo, cell).t_dot == pytest.approx(mp.t_dot, rel=1e-12)
    got = component_predict(op.uvw, op.freq, model, cell)
    want = op.dot(model)
    valid = op.weight != 0
    scale = comm.allreduce(float(np.abs(want).max(initial=0.0)), op=MPI.MAX)
    err = comm.allreduce(float((np.abs(got - want) * valid).max(initial=0.0)), op=MPI.MAX)
    assert err <= 1e-5 * scale
