"""Samples of a Measurement Set whose spread is the visibility noise, for ADMM's l2 bound
when ``deconvolution.admm_sigma_jy`` is 0 (issue #16: real data need not honour WEIGHT; the
real MWA snapshot's weights say 6 mJy, its Stokes V says 1.6 Jy).

Read on one process from blocks of rows spread evenly over the selection (the same rows
whatever the rank count, so the estimate and every image after it do not depend on it),
through :func:`radimg.io.ms.read_selection`. In order:

- Stokes V as WSClean forms it (``(RR - LL) / 2`` or ``-i (XY - YX) / 2``), which the sky
  barely emits (not when it is all zero: radimg's own simulations write no cross hands);
- second differences of Stokes I over neighbouring channels,
  ``(I[c-1] - 2 I[c] + I[c+1]) / sqrt(6)``: a sky smooth in frequency cancels to first
  order (weaker than V on wide fields, where long baselines decorrelate across channels);
- first differences over two channels, ``(I[1] - I[0]) / sqrt(2)``.

Each value comes with the Stokes I weight of its sample, so only the overall scale of the
weights is estimated (their relative values are kept).
"""

from __future__ import annotations

import math

import numpy as np

from radimg.io.ms import MSError, plan_selection, read_selection

__all__ = ["noise_sample", "MAX_ROWS", "BLOCKS"]

#: Rows read at most (~1e5 samples make the MAD good to ~0.5 %), in BLOCKS blocks spread
#: evenly over the row space.
MAX_ROWS = 20_000
BLOCKS = 16


def _blocks(nrows, max_rows=MAX_ROWS, blocks=BLOCKS):
    if nrows <= max_rows:
        return [(0, nrows)]
    size = max_rows // blocks
    starts = np.linspace(0, nrows - size, blocks).astype(np.int64)
    return [(int(a), int(a) + size) for a in starts]


def _read(sel, rows_list, datacolumn, lock_wait_s):
    vis, wgt = [], []
    for rows in rows_list:
        d = read_selection(sel, datacolumn=datacolumn, rows=rows, precision="double",
                           lock_wait_s=lock_wait_s)
        vis.append(d.vis)
        wgt.append(d.weight)
    return np.concatenate(vis, axis=-2), np.concatenate(wgt, axis=-2).astype(np.float64)


def noise_sample(ms, *, datacolumn="DATA", spw=0, field=0, chan_range=None, max_rows=MAX_ROWS,
                 lock_wait_s=None):
    """Noise-like samples of the MS and their Stokes I weights.

    Parameters
    ----------
    ms : str, path-like or list of them (``input.ms``).
    datacolumn, spw, field, chan_range : as ``input.*`` (see
        :func:`radimg.io.ms.plan_selection`).
    max_rows : int
        Rows read at most.

    Returns
    -------
    kind : str
        What the values are (for the log).
    values : ndarray (n,), complex128
        Samples whose real and imaginary parts have the Stokes I noise of their sample.
    weight : ndarray (n,), float64
        Stokes I weight of each value (as the reader makes it), > 0.

    Raises
    ------
    MSError
        Neither a usable Stokes V nor two channels to difference.
    """
    kw = dict(spw=spw, field=field, chan_range=chan_range, lock_wait_s=lock_wait_s)
    sel = plan_selection(ms, stokes="I", datacolumn=datacolumn, **kw)
    rows = _blocks(sel.nrows_total, max_rows)
    try:
        sel_v = plan_selection(ms, stokes="IV", datacolumn=datacolumn, **kw)
    except (MSError, ValueError):
        sel_v = None  # no Stokes V from these correlations
    if sel_v is not None:
        vis, wgt = _read(sel_v, rows, datacolumn, lock_wait_s)
        v, wv, wi = vis[1], wgt[1], wgt[0]
        ok = (wv > 0) & (wi > 0)
        if ok.any() and np.any(v[ok] != 0):
            # V's weight from its own correlations; the scale found applies to I's weights
            return "Stokes V", v[ok].astype(np.complex128), wv[ok]
    vis, wgt = _read(sel, rows, datacolumn, lock_wait_s)
    nchan = vis.shape[1]
    if nchan >= 3:
        d = (vis[:, :-2] - 2 * vis[:, 1:-1] + vis[:, 2:]) / math.sqrt(6.0)
        w = wgt[:, 1:-1]
        ok = (wgt[:, :-2] > 0) & (w > 0) & (wgt[:, 2:] > 0)
        kind = "second differences of Stokes I over neighbouring channels"
    elif nchan == 2:
        d = (vis[:, 1] - vis[:, 0]) / math.sqrt(2.0)
        w = np.minimum(wgt[:, 0], wgt[:, 1])
        ok = w > 0
        kind = "differences of Stokes I between its two channels"
    else:
        ok = np.zeros(0, bool)
    if not ok.any():
        raise MSError(
            f"{sel.meta.get('ms', ms)}: cannot estimate the visibility noise (no Stokes V, and "
            "fewer than two channels to difference); set deconvolution.admm_sigma_jy"
        )
    return kind, d[ok].astype(np.complex128), w[ok]
