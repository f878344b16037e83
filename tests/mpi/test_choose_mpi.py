"""``wterm.mode: auto`` decided the same on every rank and at every rank count (issue #13).

Launched by tests/test_mpi_launch.py at 1-4 ranks with uneven row ranges (one rank empty
from 3 ranks on). The collective chooser the pipeline calls (radimg.parallel.choose.decide:
global reductions, the rank-count independent |w| subsample, rank 0 decides and
broadcasts) must give every rank the same answer, equal to the serial chooser's on all
rows. 24 000 samples, so the w-stack cost model reads a subsample.
"""

import math

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

N_ROWS, NPIX = 12_000, 128
FREQ = np.array([1.5e8, 1.8e8])


def _slices(n, size):
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "_util", pathlib.Path(__file__).with_name("_util.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.uneven_slices(n, size)


def _data(fov_deg, wsig, seed=21):
    rng = np.random.default_rng(seed)
    cell = math.radians(fov_deg) / NPIX
    lam = 299792458.0 / FREQ[-1]
    uvw = np.empty((N_ROWS, 3))
    uvw[:, :2] = rng.normal(0.0, 0.15 / cell, (N_ROWS, 2)) * lam
    uvw[:, 2] = rng.normal(0.0, wsig, N_ROWS) * lam
    wgt = rng.uniform(0.5, 2.0, (N_ROWS, FREQ.size))
    wgt[rng.random(wgt.shape) < 0.05] = 0.0
    return uvw, wgt, cell


@pytest.mark.parametrize("fov, wsig, expect", [(20.0, 60.0, None), (10.0, 0.0, "none")])
def test_every_rank_gets_the_serial_choice(fov, wsig, expect):
    from mpi4py import MPI

    from radimg.ops.choose import choose_wterm
    from radimg.parallel.choose import decide, summarize

    comm = MPI.COMM_WORLD
    uvw, wgt, cell = _data(fov, wsig)
    lo, hi = _slices(N_ROWS, comm.size)[comm.rank]
    got = decide(comm, uvw[lo:hi], FREQ, wgt[lo:hi] != 0, NPIX, NPIX, cell, cell, 1e-5,
                 precision="double", oversampling="auto", nstacks="auto",
                 small_inversion=True)
    # every rank holds the same decision and table ...
    desc = got.describe()
    assert all(d == desc for d in comm.allgather(desc))
    # ... equal to the serial chooser on all rows (so the rank count changes nothing)
    s = summarize(uvw, FREQ, wgt != 0, NPIX, NPIX, cell, cell)
    ser = choose_wterm(s, NPIX, NPIX, cell, cell, 1e-5, precision="double")
    assert ser.describe() == desc
    if expect is not None:
        assert got.mode == expect
    else:
        assert got.mode != "none"
