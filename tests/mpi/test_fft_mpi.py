"""The FFT backend is decided once on rank 0 and broadcast (issue #13 item 5): every rank of a
DistributedOperator runs the same backend, even where one rank lacks a library; measured
FFTW plans are shared as wisdom. Launched by tests/test_mpi_launch.py at 1-4 ranks."""

import numpy as np
import pytest

pytestmark = pytest.mark.mpi



def _only(names):
    """A stand-in for :func:`radimg.ops.fft.available` where just ``names`` import."""
    return lambda probe=None: [n for n in names if probe is None or n in probe]

def _data(nrow=600, npix=64, fov_deg=20.0, seed=4):
    rng = np.random.default_rng(seed)
    cell = np.deg2rad(fov_deg) / npix
    freq = np.array([1.0e8, 1.2e8])
    uvw = np.empty((nrow, 3))
    uvw[:, :2] = rng.uniform(-1, 1, (nrow, 2)) * 0.4 / cell * 299792458.0 / freq[-1]
    uvw[:, 2] = rng.uniform(-100, 100, nrow) * 299792458.0 / freq[-1]
    return uvw, freq, np.ones((nrow, freq.size)), npix, cell


def _names(comm, op):
    return comm.allgather(op.fft_backend)


@pytest.mark.parametrize("mode", ["wstack", "wstack-wproject"])
def test_every_rank_same_backend_when_one_rank_lacks_fftw(mode, monkeypatch):
    """Rank 1 (the last rank at 1 rank) cannot import pyfftw and the work is large enough
    for measured FFTW plans: rank 0 alone would pick FFTW, every rank must get scipy."""
    from mpi4py import MPI

    from radimg.ops import fft as F
    from radimg.parallel.operator import DistributedOperator

    comm = MPI.COMM_WORLD
    monkeypatch.setattr(F, "MEASURE_WORK", 0.0)  # small test data count as "large"
    if comm.rank == min(1, comm.size - 1):
        monkeypatch.setattr(F, "available", _only(["scipy", "numpy"]))
    uvw, freq, wgt, npix, cell = _data()
    lo, hi = (comm.rank * uvw.shape[0]) // comm.size, ((comm.rank + 1) * uvw.shape[0]) // comm.size
    op = DistributedOperator(comm, uvw[lo:hi], freq, wgt[lo:hi], npix, npix, cell, mode=mode,
                             epsilon=1e-4, fft="auto")
    names = _names(comm, op)
    assert len(set(names)) == 1, names
    assert names[0] == "scipy"


def test_every_rank_runs_ducc0_where_every_rank_has_it(monkeypatch):
    """The default where ducc0 imports everywhere: every rank runs it; where one rank lacks
    it (the last rank here), every rank falls back to the same other backend."""
    from mpi4py import MPI

    from radimg.ops import fft as F
    from radimg.parallel.operator import DistributedOperator

    comm = MPI.COMM_WORLD
    if "ducc0" not in F.available():
        pytest.skip("ducc0 not installed")
    uvw, freq, wgt, npix, cell = _data()
    lo, hi = (comm.rank * uvw.shape[0]) // comm.size, ((comm.rank + 1) * uvw.shape[0]) // comm.size
    op = DistributedOperator(comm, uvw[lo:hi], freq, wgt[lo:hi], npix, npix, cell,
                             mode="wstack", epsilon=1e-4, fft="auto")
    assert _names(comm, op) == ["ducc0"] * comm.size
    if comm.rank == comm.size - 1:
        monkeypatch.setattr(F, "available", _only(["scipy", "fftw", "numpy"]))
    op = DistributedOperator(comm, uvw[lo:hi], freq, wgt[lo:hi], npix, npix, cell,
                             mode="wstack", epsilon=1e-4, fft="auto")
    names = _names(comm, op)
    assert len(set(names)) == 1 and names[0] in ("scipy", "fftw-measure"), names


@pytest.mark.parametrize("mode", ["wstack", "wstack-wproject"])
def test_every_rank_same_measured_plans(mode, monkeypatch, tmp_path_factory):
    """Where every rank has pyfftw (and not ducc0), every rank runs FFTW with rank 0's
    measured plans: the images of identical inputs on every rank agree bitwise across ranks."""
    from mpi4py import MPI

    from radimg.ops import fft as F
    from radimg.parallel.operator import DistributedOperator

    if "fftw" not in F.available():
        pytest.skip("pyfftw not installed")
    comm = MPI.COMM_WORLD
    monkeypatch.setattr(F, "MEASURE_WORK", 0.0)
    monkeypatch.setattr(F, "available", _only(["scipy", "fftw", "numpy"]))  # no ducc0
    uvw, freq, wgt, npix, cell = _data()
    lo, hi = (comm.rank * uvw.shape[0]) // comm.size, ((comm.rank + 1) * uvw.shape[0]) // comm.size
    op = DistributedOperator(comm, uvw[lo:hi], freq, wgt[lo:hi], npix, npix, cell, mode=mode,
                             epsilon=1e-4, fft="auto")
    names = _names(comm, op)
    assert names == ["fftw-measure"] * comm.size
    vis = np.ones((op.nrow, op.nchan), dtype=op.cdtype)
    img = op.hdot(vis, op.weight)
    allimg = comm.allgather(img)
    for other in allimg[1:]:
        np.testing.assert_array_equal(other, allimg[0])
