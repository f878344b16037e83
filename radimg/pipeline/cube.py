"""Dirty cubes (issue #15): several polarisation products (``image.stokes``) and/or output
channels (``image.channels_out``), each image made as the single-image pipeline makes one.

Every (output channel, product) image has its own samples (the product's visibilities and
data weights in the output channel's input channels, :func:`radimg.io.ms.output_channels`),
its own imaging weights (natural / uniform / Briggs from its own density grid, as WSClean
weights each output channel), its own PSF and restoring beam, and is normalised by its own
weight sum. The products of one output channel share its uvw, so they share one operator
wherever their sample masks (``weight != 0`` after flags) are equal: the distributed operator
depends on the data weights only through that mask, so the images are those of an operator
built per image (products whose flags differ, e.g. U and V when only XY is flagged, get
their own). The multi-frequency image of a product (``<name>_mfs``) is the
weight-sum-weighted mean of its channel images, which equals the image of all its samples
with those per-channel imaging weights (WSClean's MFS image of ``-channels-out``).

A cube is deconvolved only with ``deconvolution.join_channels`` and/or
``join_polarizations`` (radimg.pipeline.preflight.check_deconvolvable): joined Hogbom CLEAN
(radimg.deconv.joined) with major cycles through every image's own operator, giving
per-image models, residuals and restored images (each channel restored with its own beam),
MFS model/residual/restored images, and with two or more channels a spectral-index map
``/images/spectral_index`` (stokes, y, x). Deconvolution keeps every image's backend (its
samples and operator) alive for the major cycles. Joined runs write no checkpoint and
cannot resume (a stop signal ends them as one before deconvolution does).

Output channels are imaged one after another. For a dirty cube one operator (and one
product's samples) at a time is alive, the previous channel's dropped before the next is
built, so a rank's peak is that of the largest single image whatever ``channels_out`` is
(``radimg plan`` shows it per output channel); a joined deconvolution keeps them all
(above). The last backend gives the product its operator, load-balance and transfer
figures (the ``/run`` record says which image they belong to). The "samples beyond the uv
grid" warning is printed once per cube (the counts of every image are in
``weighting_json``).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import replace
from functools import partial

import numpy as np

from radimg.pipeline.context import Observation


def is_cube(obs) -> bool:
    """More than one product or output channel: the cube layout (a single Stokes
    parameter in one output channel keeps the 2-D images of the single-image path)."""
    return len(obs.data.stokes) > 1 or len(obs.meta["output_channels"]) > 1


def image_slices(obs):
    """``(p, c, Observation)`` of every image of the cube: product ``p`` (of
    ``obs.data.stokes``) in output channel ``c`` (of ``obs.meta['output_channels']``), its
    data a copy (each backend consumes and changes its samples), channels outer."""
    data = obs.data
    vis = data.vis if data.vis.ndim == 3 else data.vis[None]
    wgt = data.weight if data.weight.ndim == 3 else data.weight[None]
    width = data.chan_width
    for c, oc in enumerate(obs.meta["output_channels"]):
        a, b = oc["chan"]
        for p in range(vis.shape[0]):
            sub = replace(
                data,
                uvw=data.uvw.copy(),
                freq=data.freq[a:b].copy(),
                vis=np.ascontiguousarray(vis[p, :, a:b]),
                weight=np.ascontiguousarray(wgt[p, :, a:b]),
                stokes=(data.stokes[p],),
                chan_width=None if width is None else width[a:b].copy(),
            )
            yield p, c, Observation(obs.meta, sub, obs.rows, obs.summary)


def same_mask(comm, a, b):
    """Whether two products' sample masks (row, chan) bool, this rank's rows as read, are
    equal on every rank (collective): the distributed operator depends on its samples' data
    weights only through ``weight != 0`` (rows, loads, stacks, tiles), so products with
    equal masks can share it exactly."""
    from mpi4py import MPI

    return bool(comm.allreduce(bool(a.shape == b.shape and np.array_equal(a, b)),
                               op=MPI.LAND))


def with_samples(job, backend, data, weigh):
    """A backend over ``backend``'s operator (no set-up) for another product of the same
    output channel whose sample mask equals the one the operator was built on
    (:func:`same_mask`): its visibilities and data weights are moved to the rows' owner
    ranks as the operator moved its own, and its imaging weights made there, so its images
    are those of a backend built for it. ``backend``'s own samples are dropped (its
    product is done); the operator is shared (collective).

    Parameters
    ----------
    job : radimg.pipeline.context.Job
    backend : radimg.pipeline.operator.ImagingBackend, built on an equal mask
    data : radimg.io.ms.VisData, the product's rows as read (``data.vis`` moves in)
    weigh : callable ``(uvw, data_weight) -> (imaging_weight, weight_sum)``
    """
    backend.vis = backend.imaging_weight = None
    new = copy.copy(backend)
    with job.timer.stage("operator setup"):
        new.vis = backend.op.redistribute_vis(data.vis)
        new.data_weight = backend.op.redistribute_vis(data.weight)
        del data.vis  # the read order's copy: only the redistributed one from here on
    new.imaging_weight, new.weight_sum = weigh(new.uvw, new.data_weight)
    # a backend whose operator keeps samples on a device loads this product's on first use
    return new


def mfs(images, weight_sums):
    """Multi-frequency images: the channel images' mean weighted by their weight sums.

    Parameters
    ----------
    images : ndarray (stokes, channel, y, x) float64
    weight_sums : ndarray (stokes, channel) float64, each image's imaging-weight sum

    Returns
    -------
    ndarray (stokes, y, x) float64
    """
    w = np.asarray(weight_sums, dtype=np.float64)
    return np.einsum("sc,scyx->syx", w, images) / w.sum(axis=1)[:, None, None]


def image_cube(job, geom, obs):
    """PSF and dirty image of every (output channel, product), the MFS images, and the
    product (collective). Returns the product path on rank 0, None elsewhere."""
    from radimg.deconv.image import fit_beam
    from radimg.pipeline.common import collective_check
    from radimg.pipeline.images import make_images, wcs_info
    from radimg.pipeline.operator import make_backend
    from radimg.pipeline.weights import drop_beyond_uv_grid, weigh
    from radimg.pipeline.write import write

    stokes = list(obs.data.stokes)
    out_ch = obs.meta["output_channels"]
    ns, nc = len(stokes), len(out_ch)
    shape = (ns, nc) + geom.shape
    dirty, psf = np.zeros(shape), np.zeros(shape)
    beams, wsums = np.zeros((ns, nc, 3)), np.zeros((ns, nc))
    per_image, backend, wsummary = [], None, None
    kept = {}  # (p, c) -> the image's backend, kept for the major cycles of a deconvolution
    shared = None  # (output channel, sample mask, backend, product): an operator to share
    warned = False
    for p, c, sub in image_slices(obs):
        job.log(f"image {stokes[p]}, output channel {c + 1} of {nc} "
                f"({out_ch[c]['freq_hz'] / 1e6:.4f} MHz)")
        backend = None  # the previous image's samples go before the next
        with warnings.catch_warnings():
            if warned:  # every image of a cube loses the same baselines: say it once
                warnings.simplefilter("ignore")
            summary = drop_beyond_uv_grid(job.comm, sub.data, geom)
        warned = warned or summary["samples_beyond_uv_grid"] > 0
        weigh_sub = partial(weigh, job, geom, sub.data.freq, summary=summary)
        mask = sub.data.weight != 0
        if shared is not None and shared[0] == c and same_mask(job.comm, shared[1], mask):
            backend = with_samples(job, shared[2], sub.data, weigh_sub)
            job.log(f"operator of {stokes[shared[3]]} reused (same samples)")
        else:
            shared = None  # the previous output channel's operator goes before the next
            backend = make_backend(job, geom, sub, weigh_sub)
            shared = (c, mask, backend, p)
        psf[p, c], dirty[p, c], beams[p, c] = make_images(job, backend, geom)
        if job.deconvolves:
            kept[p, c] = keep(backend)
        wsums[p, c] = backend.weight_sum
        per_image.append({"stokes": stokes[p], "channel": c, "weight_sum": wsums[p, c],
                          "samples_weighted": summary.get("samples_weighted"),
                          "samples_beyond_uv_grid": summary["samples_beyond_uv_grid"]})
        wsummary = wsummary or summary
    shared = None
    dirty_mfs, psf_mfs = mfs(dirty, wsums), mfs(psf, wsums)
    beam_mfs = collective_check(job.comm, fit_beam, psf_mfs[0], geom.cell_deg)
    wcs = wcs_info(obs.meta, geom, beam_mfs)
    # per-channel beams from the first product's PSFs (all products share the uv coverage;
    # their weights differ only where their correlations' flags or weights do)
    wcs["cube"] = {
        "stokes": stokes,
        "freqs_hz": [oc["freq_hz"] for oc in out_ch],
        "bandwidths_hz": [oc["bandwidth_hz"] for oc in out_ch],
        "bmaj_deg": beams[0, :, 0].tolist(),
        "bmin_deg": beams[0, :, 1].tolist(),
        "bpa_deg": beams[0, :, 2].tolist(),
    }
    images = {"dirty": dirty, "psf": psf, "dirty_mfs": dirty_mfs, "psf_mfs": psf_mfs}
    deconvolved = None
    if job.deconvolves:
        dcfg = job.cfg["deconvolution"]
        each = not (dcfg["join_channels"] or dcfg["join_polarizations"])
        with job.timer.stage("deconvolve"):
            if each:
                deconvolved = deconvolve_each(job, geom, kept, psf, dirty, wsums, beams,
                                              beam_mfs, wcs, stokes)
            else:
                deconvolved = deconvolve_cube(job, geom, kept, psf, dirty, wsums, beams,
                                              beam_mfs, [oc["freq_hz"] for oc in out_ch])
        images.update(deconvolved.images)
        kept.clear()
    wsummary = dict(wsummary, per_image=per_image,
                    operator_of=f"{stokes[-1]}, output channel {nc - 1}")
    job.signals.defer(True)  # the product is seconds away: finish it rather than lose it
    return write(job, backend, images, wcs, obs.summary, wsummary, deconvolved)


def keep(backend):
    """A backend kept for the major cycles: a shallow copy, so that what the cube's loop
    later does to the original (another product sharing its operator takes it over and
    drops its samples) leaves this image's samples and weights in place."""
    from copy import copy

    return copy(backend)


def restore_cube(model, residual, model_mfs, residual_mfs, beams, beam_mfs, cell_deg):
    """Restored cube (stokes, channel, y, x), each channel with its own beam (the first
    product's, ``beams[0, c]``), and the restored MFS images (stokes, y, x)."""
    from radimg.deconv.image import restore

    restored = np.empty_like(model)
    for p, c in np.ndindex(*model.shape[:2]):
        restored[p, c] = restore(model[p, c], residual[p, c], beams[0, c], cell_deg)
    restored_mfs = np.stack([restore(model_mfs[p], residual_mfs[p], beam_mfs, cell_deg)
                             for p in range(model.shape[0])])
    return restored, restored_mfs


def deconvolve_each(job, geom, backends, psf, dirty, wsums, beams, beam_mfs, wcs, stokes):
    """Every image of the cube deconvolved on its own (collective): the single-image
    driver (CLEAN or ADMM, radimg.pipeline.deconvolve) through the image's own backend,
    without checkpoints; restored with the channel's beam; MFS images as the weighted mean.

    Returns
    -------
    radimg.pipeline.deconvolve.Deconvolved
        ``model``, ``residual``, ``restored`` (stokes, channel, y, x) and their ``_mfs``
        images; ``restored`` and ``restored_mfs`` on rank 0 only.
    """
    from radimg.parallel.mpi import bcast_array
    from radimg.pipeline.deconvolve import Deconvolved, admm, clean

    comm = job.comm
    if job.cfg["output"]["checkpoint"]:
        job.log("a cube's deconvolution writes no checkpoint (output.checkpoint ignored)")
    cfg = dict(job.cfg, output=dict(job.cfg["output"], checkpoint=False))
    one = replace(job, cfg=cfg)
    driver = clean if cfg["deconvolution"]["algorithm"] == "clean" else admm
    model, residual = np.zeros_like(dirty), np.zeros_like(dirty)
    per_image = []
    for (p, c), b in sorted(backends.items()):
        job.log(f"deconvolving {stokes[p]}, output channel {c + 1}")
        m, r, summary = driver(one, b, geom, psf[p, c], dirty[p, c], wcs, None)
        model[p, c] = bcast_array(comm, np.ascontiguousarray(m, dtype=np.float64))
        residual[p, c] = r
        per_image.append(dict(summary, stokes=stokes[p], channel=int(c)))
    model_mfs, residual_mfs = mfs(model, wsums), mfs(residual, wsums)
    restored = restored_mfs = None
    with job.timer.stage("restore"):
        if comm.rank == 0:
            restored, restored_mfs = restore_cube(model, residual, model_mfs, residual_mfs,
                                                  beams, beam_mfs, geom.cell_deg)
    images = {"model": model, "residual": residual, "restored": restored,
              "model_mfs": model_mfs, "residual_mfs": residual_mfs,
              "restored_mfs": restored_mfs}
    summary = {
        "algorithm": cfg["deconvolution"]["algorithm"],
        "joined": None,
        "per_image": per_image,
        "major_cycles": int(sum(s.get("major_cycles", 0) for s in per_image)),
        "components": int(sum(s.get("components", 0) for s in per_image)),
        "stopped_early": False,
    }
    return Deconvolved(images, summary)


def deconvolve_cube(job, geom, backends, psf, dirty, wsums, beams, beam_mfs, freqs_hz):
    """Joined CLEAN of the cube (radimg.deconv.joined.joined_clean; collective), each
    image's major-cycle residual through its own backend.

    Returns
    -------
    radimg.pipeline.deconvolve.Deconvolved
        ``model``, ``residual``, ``restored`` (stokes, channel, y, x), their ``_mfs``
        images (stokes, y, x) and, with two or more channels, ``spectral_index``
        (stokes, y, x); ``restored``, ``restored_mfs`` and ``spectral_index`` on rank 0
        only (None elsewhere, as the single-image path's ``restored``).
    """
    from radimg.deconv.image import mad_sigma
    from radimg.deconv.joined import SpectralFit, joined_clean, spectral_index_map
    from radimg.pipeline.common import collective_check
    from radimg.pipeline.deconvolve import Deconvolved
    from radimg.pipeline.preflight import check_mask

    comm, dcfg = job.comm, job.cfg["deconvolution"]
    user_mask = collective_check(comm, check_mask, job.cfg)
    if job.cfg["output"]["checkpoint"]:
        job.log("joined deconvolution writes no checkpoint (output.checkpoint ignored)")
    ns, nc = wsums.shape
    predicts = {}
    if dcfg["predict"] != "operator":
        from radimg.deconv.predict import MajorPredict

        for key, b in backends.items():
            if b.samples_on_host:  # CLEAN components by DFT where cheaper (as one image)
                chooser = MajorPredict(b.op, geom.cell_rad, comm=comm, nthreads=job.nthreads,
                                       dtype=b.vis.dtype, mode=dcfg["predict"])
                predicts[key] = partial(b.predict, by=chooser)

    def residual_of(model):
        job.fault_point("major")
        out = np.empty_like(model)
        for (p, c), b in backends.items():
            out[p, c] = b.residual(model[p, c], predicts.get((p, c)))
        job.timer.count("major cycles")
        return out

    model, residual, state = joined_clean(
        residual_of, dirty, psf, wsums, np.asarray(freqs_hz), dcfg,
        join_channels=dcfg["join_channels"], join_polarizations=dcfg["join_polarizations"],
        comm=comm, user_mask=user_mask, log=job.log,
    )
    job.log(f"joined CLEAN: {state['iters']} components in {state['nmajor']} major cycles "
            f"({len(state['groups'])} group(s) of images)")
    model_mfs, residual_mfs = mfs(model, wsums), mfs(residual, wsums)
    restored = restored_mfs = alpha = None
    with job.timer.stage("restore"):
        if comm.rank == 0:
            restored, restored_mfs = restore_cube(model, residual, model_mfs, residual_mfs,
                                                  beams, beam_mfs, geom.cell_deg)
            if nc > 1:
                # the MFS residual's CLEAN threshold (3 sigma without auto_threshold)
                nsig = dcfg["auto_threshold"] or 3.0
                nterms = max(2, dcfg["spectral_terms"] or 2)
                alpha = np.stack([
                    spectral_index_map(
                        model[p], SpectralFit(freqs_hz, wsums[p], nterms), beam_mfs,
                        geom.cell_deg,
                        max(dcfg["threshold_jy"], nsig * mad_sigma(residual_mfs[p])),
                    )[0]
                    for p in range(ns)
                ])
    images = {"model": model, "residual": residual, "restored": restored,
              "model_mfs": model_mfs, "residual_mfs": residual_mfs,
              "restored_mfs": restored_mfs}
    if nc > 1:
        images["spectral_index"] = alpha
    summary = {
        "algorithm": "clean",
        "joined": {
            "channels": bool(dcfg["join_channels"]),
            "polarizations": bool(dcfg["join_polarizations"]),
            "spectral_terms": dcfg["spectral_terms"],
            "ref_freq_hz": [f.nu0 for f in state["fits"]],
            "groups": [{"stokes": g["pols"], "channels": g["chans"], "threshold": g["thr"]}
                       for g in state["groups"]],
        },
        "major_cycles": state["nmajor"],
        "components": state["iters"],
        "stopped_early": False,
    }
    return Deconvolved(images, summary)
