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
from radimg.deconv.image import auto_mask, mad_sigma
from radimg.parallel.mpi import bcast_array

__all__ = ["cotton_schwab", "new_clean_state", "stop_requested"]


def new_clean_state(shape):
    """The state a CLEAN run starts from (and that a checkpoint stores)."""
    return {"model": np.zeros(shape), "nmajor": 0, "iters": 0, "auto_mask": None, "done": False}


def _minor(residual, psf, model, mask, p, stop, niter):
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
    return hogbom_minor(residual, psf, model, mask, gain=p["gain"], stop=stop, niter=niter)


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
):
    """CLEAN with Cotton-Schwab major cycles.

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

    Returns
    -------
    model, residual, state : ``state["stopped"]`` is True when ``stop_after_major`` or
    ``stop_check`` ended it (``state["interrupted"]``: ``stop_check`` did).

    Stopping (evaluated before each minor cycle): peak |residual| in the mask <= max(
    threshold_jy, auto_threshold * MAD sigma), ``niter`` components in total, or ``nmajor``
    major cycles. A minor cycle stops at max(threshold, (1 - mgain) * peak).
    """
    rank = 0 if comm is None else comm.Get_rank()
    p = params
    state = state or new_clean_state(residual.shape)
    psf = np.asarray(psf, dtype=np.float64)
    base_mask = np.ones(residual.shape, bool) if user_mask is None else np.asarray(user_mask, bool)
    ran = 0
    state["stopped"] = False
    state["interrupted"] = False
    every = int(p.get("checkpoint_every", 0))
    stop_after = int(p.get("stop_after_major", 0))
    while True:
        msg = None
        if rank == 0:
            model = state["model"]
            sigma = mad_sigma(residual)
            thr = max(p["threshold_jy"], p["auto_threshold"] * sigma)
            mask = base_mask if state["auto_mask"] is None else base_mask & state["auto_mask"]
            peak = float(np.abs(residual[mask]).max()) if mask.any() else 0.0
            if p["auto_mask"] > 0 and state["auto_mask"] is None and peak < p["auto_mask"] * sigma:
                state["auto_mask"] = auto_mask(model)
                mask = base_mask & state["auto_mask"]
                peak = float(np.abs(residual[mask]).max()) if mask.any() else 0.0
            done = peak <= thr or state["iters"] >= p["niter"] or state["nmajor"] >= p["nmajor"]
            if not done:
                stop = max(thr, (1.0 - p["mgain"]) * peak)
                work = residual.copy()
                n = _minor(work, psf, model, mask, p, stop, p["niter"] - state["iters"])
                state["iters"] += n
                done = n == 0
            msg = (
                f"major {state['nmajor']}: peak {peak:.4g} Jy/beam, threshold {thr:.4g} "
                f"(sigma {sigma:.3g}), {state['iters']} components"
            )
        if comm is not None:
            done, iters, has_am = comm.bcast(
                (done, state["iters"], state["auto_mask"] is not None) if rank == 0 else None
            )
            state["iters"] = iters
            state["model"] = bcast_array(comm, state["model"] if rank == 0 else None)
            if has_am:
                am = bcast_array(comm, state["auto_mask"].astype(np.uint8) if rank == 0 else None)
                state["auto_mask"] = am.astype(bool)
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


def stop_requested(comm, stop_check):
    """Collective: ``stop_check()`` on every rank, rank 0's answer broadcast (so a signal
    seen by one rank only cannot split the ranks). False when ``stop_check`` is None."""
    if stop_check is None:
        return False
    flag = bool(stop_check())
    if comm is not None:
        flag = bool(comm.bcast(flag, root=0))
    return flag
