"""ADMM through the distributed w-stacking w-projection operator (issue #16): on a small
wide field with w terms and 30 dB input SNR it recovers the sky (SNR against the truth far
above the dirty image's), and the model at this rank count equals the one-rank model.

Sized to take a few seconds per launch (the MPI suite runs at 1-4 ranks in CI): 64^2, 1500
samples, operator epsilon 1e-4, power method to 1e-2, 10 ADMM iterations of 5 dual
sub-iterations each. The one-rank twin runs on rank 0 only, and only when there is more than
one rank (at one rank the run is its own twin)."""

import math

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

N, CELL_ARCSEC, NROW = 64, 1400.0, 1500  # a 25 deg field, as the paper's
NITER, DUAL_ITERS = 10, 5


def _truth():
    y, x = np.mgrid[0:N, 0:N].astype(float)
    img = 0.5 * np.exp(-((x - 30) ** 2 + (y - 34) ** 2) / 18.0)  # an extended blob
    img[10, 50] += 2.0
    img[52, 12] += 1.0
    return img


def _problem(rows):
    rng = np.random.default_rng(7)
    umax = 1.0 / (2 * math.radians(CELL_ARCSEC / 3600))
    uvw = np.empty((NROW, 3))
    uvw[:, :2] = np.clip(rng.normal(0, umax / 3, (NROW, 2)), -0.95 * umax, 0.95 * umax)
    uvw[:, 2] = np.clip(rng.normal(0, 200.0, NROW), -600, 600)
    noise = rng.standard_normal((NROW, 1, 2))
    a, b = rows
    return uvw[a:b], noise


def _admm(comm, rows):
    """ADMM's model and the optimally scaled dirty image (the baseline it must beat)."""
    from radimg.deconv.admm import admm, epsilon_bound, power_norm, whitening
    from radimg.parallel.operator import DistributedOperator

    uvw, noise = _problem(rows)
    freq = np.array([299792458.0])  # uvw in wavelengths
    op = DistributedOperator(comm, uvw, freq, np.ones((uvw.shape[0], 1)), N, N,
                             math.radians(CELL_ARCSEC / 3600), epsilon=1e-4,
                             mode="wstack-wproject", precision="double")
    truth = _truth()
    y0 = op.dot(truth)
    y0n = math.sqrt(comm.allreduce(float(np.vdot(y0, y0).real)))
    sigma = y0n / math.sqrt(2 * NROW) * 10 ** (-30 / 20)  # input SNR 30 dB
    nz = noise[op.row_id]
    y = y0 + sigma * (nz[..., 0] + 1j * nz[..., 1])
    sw, _ = whitening(comm, op.weight, sigma)

    def fwd(x):
        return sw * op.dot(x)

    def adj(v):
        return np.asarray(op.hdot(v, sw), dtype=np.float64)

    # ADMM needs the norm to a few per cent (mu errs low: power_norm errs above the norm)
    lam = power_norm(fwd, adj, (N, N), comm=comm, niter=20, tol=1e-2)
    m = comm.allreduce(int(np.count_nonzero(sw)))
    x, _ = admm(fwd, adj, sw * y, (N, N), eps=epsilon_bound(m), op_norm=lam, comm=comm,
                niter=NITER, tol=1e-4, kappa=1e-3, dual_iters=DUAL_ITERS)
    dirty = adj(sw * y)
    dirty *= float(np.vdot(dirty, truth)) / float(np.vdot(dirty, dirty))
    return truth, x, dirty


def _snr(truth, x):
    return 20 * math.log10(np.linalg.norm(truth) / np.linalg.norm(truth - x))


def test_admm_recovers_a_w_corrected_field_and_matches_one_rank():
    from mpi4py import MPI

    from tests.mpi._util import uneven_slices

    comm = MPI.COMM_WORLD
    rows = uneven_slices(NROW, comm.size, seed=2)[comm.rank]
    truth, x, dirty = _admm(comm, rows)
    # a reconstruction: the zero image scores 0 dB and the best multiple of the dirty image
    # a few dB; the model must score far above both
    snr, snr_dirty = _snr(truth, x), _snr(truth, dirty)
    assert snr > 15.0 and snr > snr_dirty + 10.0, (snr, snr_dirty)
    if comm.size == 1:
        return  # this run is its own one-rank twin
    # the distributed model is the one-rank model (summation order aside); the twin runs on
    # rank 0 alone and its verdict is broadcast, so every rank passes or fails together
    err = None
    if comm.rank == 0:
        _, x1, _ = _admm(MPI.COMM_SELF, (0, NROW))
        err = float(np.max(np.abs(x - x1)) / np.max(np.abs(x1)))
    err = comm.bcast(err, root=0)
    assert err <= 1e-6, err
