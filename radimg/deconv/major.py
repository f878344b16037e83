"""Cotton-Schwab major cycles around the CLEAN minor cycles.

The residual comes from a callable ``residual_of(model)`` that the pipeline builds with the
distributed operator: ``Phi^H W (y - Phi model) / sum(W)`` (Jy/beam, the same normalisation
as the dirty image), identical on every rank. The minor cycle runs on rank 0 only and the
model (and every decision) is broadcast, so the model is bit-identical on all ranks
whatever the reduction order of the operator's Allreduce.
"""

from __future__ import annotations

import numpy as np

from radimg.deconv.clean import clark_minor, hogbom_minor, multiscale_minor
from radimg.deconv.image import SpectralConv, auto_mask, mad_sigma
from radimg.parallel.mpi import bcast_array, wait_for_root

__all__ = ["cotton_schwab", "new_clean_state", "stop_requested"]


# A minor cycle that cleaned down to the threshold ends CLEAN (WSClean) unless the threshold
# of the residual after it is lower than the one reached by more than this factor: the noise
# estimate of the residual it started from was raised by sidelobes of flux cleaned since.
CONVERGED_THRESHOLD_FACTOR = 1.1


def new_clean_state(shape):
    """The state a CLEAN run starts from (and that a checkpoint stores). ``reached``: the
    threshold (Jy/beam) the last minor cycle cleaned down to, None when it stopped at the
    mgain level (or none ran)."""
    return {
        "model": np.zeros(shape),
        "nmajor": 0,
        "iters": 0,
        "auto_mask": None,
        "done": False,
        "reached": None,
    }


def _minor(residual, psf, model, mask, p, stop, niter, psf_conv):
    scales = [s for s in p["scales_pix"] if s > 0]
    if scales:
        return multiscale_minor(
            residual,
            psf,
            model,
            mask,
            scales_pix=p["scales_pix"],
            scale_bias=p["scale_bias"],
            gain=p["gain"],
            stop=stop,
            niter=niter,
        )
    if p["minor"] == "clark":
        return clark_minor(
            residual,
            psf,
            model,
            mask,
            gain=p["gain"],
            stop=stop,
            niter=niter,
            patch_half=p["psf_patch_pix"],
        )
    return hogbom_minor(
        residual, psf, model, mask, gain=p["gain"], stop=stop, niter=niter, psf_conv=psf_conv
    )


def _masked_peak(image, mask):
    return float(np.abs(image[mask]).max()) if mask.any() else 0.0


def cotton_schwab(
    residual_of,
    residual,
    psf,
    params,
    *,
    comm=None,
    user_mask=None,
    state=None,
    on_checkpoint=None,
    stop_check=None,
    log=None,
    minor_threads=1,
):
    """CLEAN with Cotton-Schwab major cycles; stops as WSClean 3.1 does once its noise
    estimate has settled.

    Parameters
    ----------
    residual_of : callable model (npix_y, npix_x) float64 -> residual image (Jy/beam).
    residual : ndarray, the residual of ``state["model"]`` (the dirty image for a new run).
    psf : ndarray (npix_y, npix_x), peak 1 at the centre.
    params : dict, the ``deconvolution`` config section.
    comm : mpi4py communicator or None.
    user_mask : bool ndarray or None (clean everywhere).
    state : dict from ``new_clean_state`` or a checkpoint.
    on_checkpoint : callable(state), called after major cycles as ``checkpoint_every`` says.
    stop_check : callable() -> bool or None. Collective: called on every rank at the end of
        each major cycle, after the checkpoint (if any) is written; True stops the loop with
        ``state["stopped"] = state["interrupted"] = True`` (e.g. on SIGTERM), writing a
        checkpoint first if this cycle wrote none. Rank 0's answer is broadcast, so all
        ranks stop together. None: never.
    log : callable(str) or None, one line per major cycle (rank 0).
    minor_threads : int, threads of the Hogbom passes' PSF convolutions on rank 0 (the
        other ranks sleep through the minor cycle, so rank 0 may use their cores).

    Returns
    -------
    model, residual, state : ``state["stopped"]`` is True when ``stop_after_major`` or
    ``stop_check`` ended it (``state["interrupted"]``: ``stop_check`` did).

    Notes
    -----
    At the start of each major cycle, on the current residual (WSClean's
    ``Deconvolution::Perform`` and ``GenericClean::ExecuteMajorIteration``):

    1. ``sigma`` = 1.4826 MAD of the residual, threshold ``thr = max(threshold_jy,
       auto_threshold * sigma)``; while the auto-mask is still to be made
       (``auto_mask > 0``) the level is ``max(thr, auto_mask * sigma)``.
    2. Stop when the peak |residual| in the mask is <= the level, after ``niter``
       components or ``nmajor`` major cycles, or when the previous minor cycle cleaned down
       to its threshold (not only to its mgain level) and ``thr`` has not fallen below
       that threshold / ``CONVERGED_THRESHOLD_FACTOR``. WSClean 3.1 stops after such a
       minor cycle whatever the new noise estimate (its ``reachedMajorThreshold`` is
       false); radimg before this rule re-estimated and cleaned on whenever the peak
       exceeded the new threshold, chasing a threshold that fell a little every cycle (real
       MWA snapshot, 1024 x 1', auto-threshold 3: 4 major cycles and 757 components where
       WSClean does 2 and 735; now 2 and 729). The factor keeps cleaning when the first
       noise estimate came from sidelobes of flux not yet cleaned (a sparse simulated
       array: sigma 0.029 -> 0.006 Jy after one cycle; WSClean's rule stopped there,
       50x above the thermal noise, with the sources 4-15% short).
    3. Otherwise a minor cycle down to ``max(level, (1 - mgain) * peak)``, then the
       predict/image of the major cycle. In the auto-mask phase reaching its level makes
       the mask from the model's components (WSClean ``-auto-mask``) and cleaning goes on
       to ``thr`` inside it.

    A minor cycle that adds no component ends the loop at once (the residual is already
    that of the model). ``state["done"]`` marks a loop that ended by these rules; a done
    state (the checkpoint of a finished run) cleans no further.
    """
    rank = 0 if comm is None else comm.Get_rank()
    p = params
    state = state or new_clean_state(residual.shape)
    state.setdefault("reached", None)
    psf = np.asarray(psf, dtype=np.float64)
    base_mask = np.ones(residual.shape, bool) if user_mask is None else np.asarray(user_mask, bool)
    ran = 0
    state["stopped"] = False
    state["interrupted"] = False
    every = int(p.get("checkpoint_every", 0))
    stop_after = int(p.get("stop_after_major", 0))
    hogbom = p["minor"] != "clark" and not any(s > 0 for s in p["scales_pix"])
    psf_conv = None  # the PSF's spectrum for the Hogbom passes' FFT updates, made once
    while True:
        msg = None
        if rank == 0:
            done, msg, psf_conv = _root_cycle(residual, psf, base_mask, p, state, psf_conv,
                                              hogbom, minor_threads)
        if comm is not None:
            wait_for_root(comm)  # the other ranks sleep through rank 0's minor cycle
            done = _share_cycle(comm, rank, done if rank == 0 else None, state)
        if log is not None and msg:
            log(msg)
        if done:
            state["done"] = True
            break
        residual = residual_of(state["model"])
        state["nmajor"] += 1
        ran += 1
        stopping = bool(stop_after and ran >= stop_after)
        wrote = on_checkpoint is not None and ((every and state["nmajor"] % every == 0) or stopping)
        if wrote:
            on_checkpoint(state)
        if stopping:
            state["stopped"] = True
            break
        if stop_requested(comm, stop_check):
            state["stopped"] = True
            state["interrupted"] = True
            if on_checkpoint is not None and not wrote:
                on_checkpoint(state)  # so --resume can continue from here
            break
    return state["model"], residual, state


def _root_cycle(residual, psf, base_mask, p, state, psf_conv, hogbom, threads=1):
    """Rank 0's part of one major cycle (steps 1-3 of :func:`cotton_schwab`'s Notes): the
    noise, threshold and mask, the stopping rules, then a minor cycle on a copy of
    ``residual`` that adds components to ``state["model"]`` in place.

    Updates ``state`` (``iters``, ``reached``, ``auto_mask``); returns ``(done, log line,
    psf_conv)``. ``psf_conv`` is the PSF's spectrum for the Hogbom passes (``hogbom``), made
    at the first minor cycle and passed back in on the next calls.
    """
    model = state["model"]
    sigma = mad_sigma(residual)
    thr = max(p["threshold_jy"], p["auto_threshold"] * sigma)
    mask = base_mask if state["auto_mask"] is None else base_mask & state["auto_mask"]
    peak = _masked_peak(residual, mask)
    masking = p["auto_mask"] > 0 and state["auto_mask"] is None
    if masking and peak <= p["auto_mask"] * sigma:
        state["auto_mask"] = auto_mask(model)
        mask = base_mask & state["auto_mask"]
        peak = _masked_peak(residual, mask)
        masking = False
    level = max(thr, p["auto_mask"] * sigma) if masking else thr
    reached = state["reached"]
    converged = reached is not None and reached <= CONVERGED_THRESHOLD_FACTOR * thr
    done = (
        state["done"]
        or converged
        or peak <= level
        or state["iters"] >= p["niter"]
        or state["nmajor"] >= p["nmajor"]
    )
    if not done:
        if psf_conv is None and hogbom:
            psf_conv = SpectralConv(residual.shape, [psf], nthreads=threads)
        stop = max(level, (1.0 - p["mgain"]) * peak)
        work = residual.copy()
        n = _minor(work, psf, model, mask, p, stop, p["niter"] - state["iters"], psf_conv)
        state["iters"] += n
        state["reached"] = None
        if _masked_peak(work, mask) <= level:
            if masking:
                # WSClean -auto-mask: its level reached, clean on inside the
                # components found so far, down to thr
                state["auto_mask"] = auto_mask(model)
            else:
                state["reached"] = level
        done = n == 0
    msg = (
        f"major {state['nmajor']}: peak {peak:.4g} Jy/beam, threshold {thr:.4g} "
        f"(sigma {sigma:.3g}), {state['iters']} components"
        + (" (threshold reached)" if not done and state["reached"] is not None else "")
    )
    return done, msg, psf_conv


def _share_cycle(comm, rank, done, state):
    """Collective: rank 0's ``done`` and its cycle's results (``iters``, ``reached``, the
    model, the auto-mask if made) copied into every rank's ``state``; returns ``done``."""
    done, iters, reached, has_am = comm.bcast(
        (done, state["iters"], state["reached"], state["auto_mask"] is not None)
        if rank == 0
        else None
    )
    state["iters"], state["reached"] = iters, reached
    state["model"] = bcast_array(comm, state["model"] if rank == 0 else None)
    if has_am:
        am = bcast_array(comm, state["auto_mask"].astype(np.uint8) if rank == 0 else None)
        state["auto_mask"] = am.astype(bool)
    return done


def stop_requested(comm, stop_check):
    """Collective: ``stop_check()`` on every rank, rank 0's answer broadcast (so a signal
    seen by one rank only cannot split the ranks). False when ``stop_check`` is None."""
    if stop_check is None:
        return False
    flag = bool(stop_check())
    if comm is not None:
        flag = bool(comm.bcast(flag, root=0))
    return flag
