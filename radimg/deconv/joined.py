"""Joined-channel / joined-polarisation CLEAN of a cube (issue #15 item 4): WSClean's
``-join-channels [-fit-spectral-pol N] [-join-polarizations]``.

A cube holds ``(stokes, channel)`` residual images, each with its own PSF (peak 1 at
``[ny // 2, nx // 2]``). Images that are joined are cleaned together (a *group*): every
component is found on the group's combined image and lands on the same pixel of each of
its images.

- Combined image of a group (WSClean 3.1 ``ImageSet::GetLinearIntegrated`` /
  ``GetSquareIntegrated``): with one Stokes parameter the channel images' mean weighted by
  their weight sums (the MFS residual); with joined polarisations, per channel the root of
  the sum of squares over the Stokes parameters, then the same weighted mean over channels.
- Component (WSClean ``GenericClean::ExecuteMajorIteration``): at the combined image's peak
  (largest absolute value inside the mask) the value of each image there; with
  ``spectral_terms`` = N each Stokes parameter's channel values are replaced by the
  weighted least-squares polynomial of N terms in ``x = nu / nu0 - 1`` (WSClean 3.1
  ``SpectralFitter`` in ``Polynomial`` mode: weights = the channel weight sums, channels of
  weight 0 left out, ``nu0`` = the weight-sum-weighted mean of the output channels'
  frequencies) evaluated at the channels; then times the loop gain, added to each image's
  model and its own PSF times that value subtracted from each image's residual. Without
  ``spectral_terms`` (null) each channel keeps its own value (WSClean's ``-join-channels``
  without ``-fit-spectral-pol``).
- Images that are not joined form groups of their own (e.g. IQUV with joined channels but
  not joined polarisations: one group per Stokes parameter), each with its own threshold
  and stopping state; a major cycle images every image of the cube.

Spectral index: the model of each pixel is a sum of components, each a polynomial in ``x``,
so the model cube's least-squares fit with the same N terms gives back the sum of their
terms exactly. The term images are convolved with the MFS restoring beam (as CASA's mtmfs
restores its Taylor-term images) and the spectral index is ``alpha = T1 / T0``, the
logarithmic derivative ``d ln S / d ln nu`` of the fitted polynomial at ``nu0`` (for
``S = S0 (nu / nu0)^alpha``, ``c1 / c0 = alpha`` up to the polynomial's truncation error).
It is NaN where ``T0`` is at or below a threshold (the CLEAN threshold of the MFS residual).

Everything here is array work without MPI except :func:`joined_clean`, which takes ``comm``
to run the minor cycles on rank 0 and broadcast the model (as radimg.deconv.major does).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from radimg.kernels._jit import JIT_OPTIONS

__all__ = [
    "SpectralFit",
    "combined_image",
    "group_layout",
    "joined_clean",
    "joined_hogbom_minor",
    "spectral_index_map",
]

# WSClean's SpectralFitter uses 150 MHz as nu0 when every channel weight is 0
_DEFAULT_REF_FREQ_HZ = 150.0e6


class SpectralFit:
    """Weighted least-squares polynomial fit over output channels (WSClean 3.1
    ``SpectralFitter``, ``Polynomial`` mode).

    Parameters
    ----------
    freqs_hz : ndarray (channel,) float64, the output channels' frequencies
    weights : ndarray (channel,) float64, their weight sums (0: left out of the fit)
    nterms : int or None, polynomial terms (None: no fit, :meth:`project` is the identity)

    Attributes
    ----------
    nu0 : float, reference frequency (Hz): the weighted mean of ``freqs_hz``
    x : ndarray (channel,), ``freqs_hz / nu0 - 1``
    terms_of : ndarray (nterms, channel) or None, values -> polynomial coefficients
    projection : ndarray (channel, channel), values -> fitted values at the channels
    """

    def __init__(self, freqs_hz, weights, nterms):
        f = np.asarray(freqs_hz, dtype=np.float64)
        w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
        self.nu0 = float((f * w).sum() / w.sum()) if w.sum() > 0 else _DEFAULT_REF_FREQ_HZ
        self.x = f / self.nu0 - 1.0
        self.nterms = nterms
        nc = f.size
        if nterms is None:
            self.terms_of, self.projection = None, np.eye(nc)
            return
        vander = np.vander(self.x, nterms, increasing=True)  # (channel, term)
        wv = vander * w[:, None]
        # normal equations (X^T W X) c = X^T W v; lstsq keeps a rank-deficient set usable
        self.terms_of = np.linalg.lstsq(vander.T @ wv, wv.T, rcond=None)[0]
        self.projection = vander @ self.terms_of

    def terms(self, values):
        """Polynomial coefficients ``(nterms, ...)`` of channel values ``(channel, ...)``."""
        v = np.asarray(values, dtype=np.float64)
        return np.tensordot(self.terms_of, v, axes=(1, 0))


def group_layout(nstokes, nchan, join_channels, join_polarizations):
    """The groups of images cleaned together: a list of ``(stokes indices, channel
    indices)``; un-joined axes give one group per index."""
    pols = [list(range(nstokes))] if join_polarizations else [[p] for p in range(nstokes)]
    chans = [list(range(nchan))] if join_channels else [[c] for c in range(nchan)]
    return [(p, c) for p in pols for c in chans]


def combined_image(residual, cw, squared):
    """A group's combined image (module doc).

    Parameters
    ----------
    residual : ndarray (stokes, channel, y, x) float64, the group's images
    cw : ndarray (channel,) float64, channel weights (sum 1)
    squared : bool, root of the sum of squares over Stokes (joined polarisations)

    Returns
    -------
    ndarray (y, x) float64
    """
    per_chan = np.sqrt((residual**2).sum(axis=0)) if squared else residual[0]
    return np.tensordot(np.asarray(cw, dtype=np.float64), per_chan, axes=(0, 0))


@njit(**JIT_OPTIONS)
def _combined(res, cw, squared, out):
    ns, nc, ny, nx = res.shape
    for y in range(ny):
        for x in range(nx):
            acc = 0.0
            for c in range(nc):
                if squared:
                    s = 0.0
                    for p in range(ns):
                        s += res[p, c, y, x] * res[p, c, y, x]
                    acc += cw[c] * np.sqrt(s)
                else:
                    acc += cw[c] * res[0, c, y, x]
            out[y, x] = acc


@njit(**JIT_OPTIONS)
def _joined_hogbom_kernel(res, psf, model, mask, cw, proj, squared, gain, stop, niter, integ):
    ns, nc, ny, nx = res.shape
    cy = ny // 2
    cx = nx // 2
    _combined(res, cw, squared, integ)
    vals = np.empty((ns, nc))
    amps = np.empty((ns, nc))
    n = 0
    while n < niter:
        best = -1.0
        py = -1
        px = -1
        for y in range(ny):
            for x in range(nx):
                if mask[y, x]:
                    a = abs(integ[y, x])
                    if a > best:
                        best = a
                        py = y
                        px = x
        if py < 0 or best <= stop:
            break
        for p in range(ns):
            for c in range(nc):
                vals[p, c] = res[p, c, py, px]
            for c in range(nc):
                acc = 0.0
                for k in range(nc):
                    acc += proj[c, k] * vals[p, k]
                amps[p, c] = gain * acc
        y0 = max(0, py - cy)
        y1 = min(ny, py - cy + ny)
        x0 = max(0, px - cx)
        x1 = min(nx, px - cx + nx)
        for p in range(ns):
            for c in range(nc):
                amp = amps[p, c]
                model[p, c, py, px] += amp
                wc = cw[c]
                for y in range(y0, y1):
                    yy = y - py + cy
                    for x in range(x0, x1):
                        d = amp * psf[p, c, yy, x - px + cx]
                        res[p, c, y, x] -= d
                        if not squared:
                            integ[y, x] -= wc * d
        if squared:
            _combined(res, cw, squared, integ)
        n += 1
    return n


def joined_hogbom_minor(residual, psf, model, mask, cw, projection, *, squared, gain, stop,
                        niter):
    """Joined Hogbom minor cycle of one group, in place on ``residual`` and ``model``.

    Parameters
    ----------
    residual, model : ndarray (stokes, channel, y, x) float64, C-contiguous, changed in place
    psf : ndarray (stokes, channel, y, x) float64, each image's PSF (peak 1 at the centre)
    mask : bool ndarray (y, x), where components may go
    cw : ndarray (channel,) float64, channel weights of the combined image (sum 1)
    projection : ndarray (channel, channel), channel values -> fitted values
        (:attr:`SpectralFit.projection`; identity: no fit)
    squared : bool, joined polarisations (combined image from the sum of squares)
    gain : float, loop gain
    stop : float, stop when the combined image's peak |value| is at or below this
    niter : int, most components

    Returns
    -------
    int, components found
    """
    ny, nx = residual.shape[-2:]
    integ = np.empty((ny, nx))
    return int(_joined_hogbom_kernel(
        residual, np.ascontiguousarray(psf, dtype=np.float64), model,
        np.ascontiguousarray(mask, dtype=np.uint8), np.asarray(cw, dtype=np.float64),
        np.ascontiguousarray(projection, dtype=np.float64), bool(squared), float(gain),
        float(stop), int(niter), integ,
    ))


def joined_clean(residual_of, residual, psf, weight_sums, freqs_hz, params, *, join_channels,
                 join_polarizations, comm=None, user_mask=None, log=None):
    """Cotton-Schwab CLEAN of a cube with joined channels and/or polarisations.

    Parameters
    ----------
    residual_of : callable model (stokes, channel, y, x) -> residual cube (collective), the
        major cycle: each image's ``Phi^H W (y - Phi x) / sum W`` through its own operator
    residual : ndarray (stokes, channel, y, x) float64, the dirty cube
    psf : ndarray (stokes, channel, y, x) float64
    weight_sums : ndarray (stokes, channel) float64, each image's imaging-weight sum
    freqs_hz : ndarray (channel,) float64, the output channels' frequencies
    params : dict, the ``deconvolution`` config section (``spectral_terms`` None or N)
    join_channels, join_polarizations : bool
    comm : mpi4py communicator or None (the minor cycles run on rank 0, the model and the
        decisions are broadcast, so the model is identical on every rank)
    user_mask : bool ndarray (y, x) or None
    log : callable(str) or None, one line per group per major cycle

    Returns
    -------
    model, residual : ndarray (stokes, channel, y, x) float64
    state : dict, ``nmajor``, ``iters``, ``groups`` (per group: ``done``, ``reached``,
        ``thr``), ``fits`` (per group: :class:`SpectralFit` over its channels)

    Notes
    -----
    Per group, at the start of each major cycle (as radimg.deconv.major.cotton_schwab for
    one image): ``thr = max(threshold_jy, auto_threshold * sigma)`` with ``sigma`` the
    robust noise of the group's combined image; the group is done when its combined peak
    is at or below ``thr``, or after a minor cycle that reached ``thr`` when the new
    ``thr`` has not fallen below it by more than ``CONVERGED_THRESHOLD_FACTOR``. The run
    ends when every group is done, after ``niter`` components in all or ``nmajor`` major
    cycles. A minor cycle cleans to ``max(thr, (1 - mgain) * peak)``.
    """
    from radimg.deconv.image import mad_sigma
    from radimg.deconv.major import CONVERGED_THRESHOLD_FACTOR
    from radimg.parallel.mpi import bcast_array, wait_for_root

    p = params
    rank = 0 if comm is None else comm.Get_rank()
    ns, nc, ny, nx = residual.shape
    mask = np.ones((ny, nx), bool) if user_mask is None else np.asarray(user_mask, bool)
    psf = np.ascontiguousarray(psf, dtype=np.float64)
    wsum = np.asarray(weight_sums, dtype=np.float64)
    freqs = np.asarray(freqs_hz, dtype=np.float64)
    groups = []
    for pols, chans in group_layout(ns, nc, join_channels, join_polarizations):
        w = wsum[pols[0], chans]
        cw = w / w.sum() if w.sum() > 0 else np.full(len(chans), 1.0 / len(chans))
        nterms = p.get("spectral_terms") if len(chans) > 1 else None
        fit = SpectralFit(freqs[chans], w, nterms)
        groups.append({"pols": pols, "chans": chans, "cw": cw, "fit": fit,
                       "squared": len(pols) > 1, "done": False, "reached": None, "thr": 0.0})
    model = np.zeros_like(residual, dtype=np.float64)
    residual = np.array(residual, dtype=np.float64)
    state = {"nmajor": 0, "iters": 0}
    while True:
        msgs = []
        if rank == 0:
            for gi, g in enumerate(groups):
                if g["done"]:
                    continue
                ix = np.ix_(g["pols"], g["chans"])
                work = np.ascontiguousarray(residual[ix])
                comb = combined_image(work, g["cw"], g["squared"])
                sigma = mad_sigma(comb)
                thr = max(p["threshold_jy"], p["auto_threshold"] * sigma)
                peak = float(np.abs(comb[mask]).max()) if mask.any() else 0.0
                reached = g["reached"]
                converged = reached is not None and reached <= CONVERGED_THRESHOLD_FACTOR * thr
                g["thr"] = thr
                if (converged or peak <= thr or state["iters"] >= p["niter"]
                        or state["nmajor"] >= p["nmajor"]):
                    g["done"] = True
                    continue
                stop = max(thr, (1.0 - p["mgain"]) * peak)
                gmodel = np.ascontiguousarray(model[ix])
                n = joined_hogbom_minor(
                    work, psf[ix], gmodel, mask, g["cw"], g["fit"].projection,
                    squared=g["squared"], gain=p["gain"], stop=stop,
                    niter=p["niter"] - state["iters"],
                )
                model[ix] = gmodel
                state["iters"] += n
                left = combined_image(work, g["cw"], g["squared"])
                g["reached"] = thr if np.abs(left[mask]).max() <= thr else None
                g["done"] = n == 0
                msgs.append(f"major {state['nmajor']}, group {gi + 1}/{len(groups)}: peak "
                            f"{peak:.4g} Jy/beam, threshold {thr:.4g} (sigma {sigma:.3g}), "
                            f"{state['iters']} components")
        done = all(g["done"] for g in groups)
        if comm is not None:
            wait_for_root(comm)
            flags = comm.bcast(
                ([(g["done"], g["reached"], g["thr"]) for g in groups], state["iters"])
                if rank == 0 else None
            )
            for g, (d, r, t) in zip(groups, flags[0]):
                g["done"], g["reached"], g["thr"] = d, r, t
            state["iters"] = flags[1]
            done = all(g["done"] for g in groups)
            model = bcast_array(comm, model if rank == 0 else None)
        if log is not None:
            for m in msgs:
                log(m)
        if done:
            break
        residual = np.asarray(residual_of(model), dtype=np.float64)
        state["nmajor"] += 1
    state["groups"] = [{k: g[k] for k in ("pols", "chans", "done", "reached", "thr")}
                       for g in groups]
    state["fits"] = [g["fit"] for g in groups]
    return model, residual, state


def spectral_index_map(model, fit, beam_deg, cell_deg, threshold):
    """Spectral-index image of one Stokes parameter's model cube.

    Parameters
    ----------
    model : ndarray (channel, y, x) float64, Jy/pixel
    fit : SpectralFit with ``nterms >= 2``
    beam_deg : (bmaj, bmin, bpa) degrees, the MFS restoring beam
    cell_deg : float
    threshold : float, Jy/beam: NaN where the restored term 0 is at or below it

    Returns
    -------
    alpha : ndarray (y, x) float64, ``T1 / T0`` of the beam-convolved term images
    terms : ndarray (nterms, y, x) float64, the beam-convolved term images (Jy/beam)
    """
    from radimg.deconv.image import restore

    raw = fit.terms(model)
    terms = np.stack([restore(t, np.zeros_like(t), beam_deg, cell_deg) for t in raw])
    alpha = np.full(model.shape[1:], np.nan)
    ok = terms[0] > threshold
    alpha[ok] = terms[1][ok] / terms[0][ok]
    return alpha, terms
