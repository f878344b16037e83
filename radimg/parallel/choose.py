"""``wterm.mode: auto``'s collective part (issue #13): the global summary of all ranks'
samples and the decision made on rank 0 and broadcast, so every rank runs the same mode at
any rank count. The model itself (candidates, costs, the error bound) is
:mod:`radimg.ops.choose`, which needs no MPI.
"""

from __future__ import annotations

import numpy as np

from radimg.constants import C_LIGHT
from radimg.ops.choose import MAX_W_SAMPLES, WSummary, choose_wterm
from radimg.parallel.mpi import allreduce_array, check_on_root
from radimg.parallel.operator import global_subsample

__all__ = ["summarize", "decide"]


def summarize(uvw, freq, valid, npix_x, npix_y, cell_x, cell_y, *, comm=None,
              max_samples=MAX_W_SAMPLES):
    """:class:`radimg.ops.choose.WSummary` of this rank's samples; collective when ``comm``
    is given.

    Parameters
    ----------
    uvw : ndarray (row, 3) float64, metres; freq : ndarray (chan,) float64, Hz
    valid : ndarray (row, chan) bool, the samples that will be gridded
    npix_x, npix_y, cell_x, cell_y : the requested image (cells in radians)
    comm : mpi4py communicator or None

    Returns
    -------
    WSummary; ``w_sample`` is gathered on rank 0 only (None elsewhere). Reductions: one
    Allreduce each for the count, the ``|w|`` range and the local-frequency maxima, one
    gather of at most ``max_samples`` values.
    """
    from radimg.ops.resample import candidate_periods, local_frequency_max

    uvw = np.ascontiguousarray(uvw, dtype=np.float64)
    freq = np.ascontiguousarray(np.atleast_1d(freq), dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    # |w| exactly as the wstack operator computes its range ...
    absw = np.abs(uvw[:, 2])[:, None] * (freq / C_LIGHT)[None, :]
    sel = absw[valid]
    mm = np.array([sel.min() if sel.size else np.inf, -(sel.max() if sel.size else -np.inf)])
    allreduce_array(comm, mm, "min")
    nsel = int(allreduce_array(comm, np.array([sel.size], np.int64), "sum")[0])
    # ... and as wproject_stacks computes its k-means input (bitwise the same subsample)
    w_abs = np.abs(uvw[:, 2:3] * freq[None, :] / C_LIGHT)[valid]
    sample, _ = global_subsample(comm, w_abs, max_samples)
    periods = candidate_periods(npix_x, npix_y, cell_x, cell_y)
    fmax = np.ascontiguousarray(
        local_frequency_max(uvw, freq, valid, [(p[2], p[3]) for p in periods])
    )
    allreduce_array(comm, fmax, "max")
    wmin, wmax = (float(mm[0]), float(-mm[1])) if nsel else (0.0, 0.0)
    return WSummary(nsel, wmin, wmax, sample, periods, fmax)


def decide(comm, uvw, freq, valid, npix_x, npix_y, cell_x, cell_y, epsilon, **kw):
    """:func:`radimg.ops.choose.choose_wterm` on the samples of all ranks, the same
    :class:`radimg.ops.choose.WtermChoice` on every rank. Collective when ``comm`` is given: :func:`summarize` (global reductions
    and the rank-count independent ``|w|`` subsample on rank 0), then rank 0 decides and
    broadcasts; a ConfigError it raises (no mode reaches epsilon) is raised on every rank
    (radimg.parallel.mpi.check_on_root). ``kw``: as :func:`radimg.ops.choose.choose_wterm`."""
    summ = summarize(uvw, freq, valid, npix_x, npix_y, cell_x, cell_y, comm=comm)
    if comm is not None and comm.Get_rank() != 0 and kw.get("small_inversion", True):
        # While rank 0 decides, the others tabulate the small-inversion windows it tabulates
        # for its candidates (ops.resample.window_margin, cached per process): otherwise
        # they do it after the decision, on the set-up's critical path (0.2 s).
        from radimg.ops.resample import tabulate_windows

        tabulate_windows()
    return check_on_root(comm, choose_wterm, summ, npix_x, npix_y, cell_x, cell_y, epsilon,
                         **kw)
