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

Output channels are imaged one after another, by all ranks or, with
``resources.channel_groups`` G > 1 (``auto``: the largest divisor of the rank count that is
at most ``channels_out``), by G groups of ranks at once: output channel c on group c mod G
(radimg.parallel.groups), each group with its own communicator, so every (output channel,
w-stack) grid has its owner among the channel's group and no rank holds the samples or
grids of channels outside its group. Each rank's rows as read are first sent to the groups
(the group's channel columns), the groups image and deconvolve image by image, and the
cube is assembled on every rank. For a dirty cube one operator (and one product's samples)
at a time is alive on a rank, the previous channel's dropped before the next is built, so
a rank's peak is that of the largest single image of its group whatever ``channels_out``
is (``radimg plan`` shows it per output channel and rank); a joined deconvolution keeps
them all (above) and uses one group. The last backend gives the product its operator, load-balance and transfer
figures (the ``/run`` record says which image they belong to). The "samples beyond the uv
grid" warning is printed once per cube (the counts of every image are in
``weighting_json``).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, replace
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
    """PSF and dirty image of every (output channel, product), the MFS images, any
    deconvolution, and the product (collective). Returns the product path on rank 0, None
    elsewhere.

    With ``resources.channel_groups`` > 1 (radimg.parallel.groups) each group of ranks
    images its own output channels, deconvolves them image by image when asked, and the
    cube is assembled on every rank afterwards; a joined deconvolution needs every image's
    operator in one place, so it runs with one group.
    """
    from radimg.deconv.image import fit_beam
    from radimg.pipeline.common import collective_check
    from radimg.pipeline.images import wcs_info
    from radimg.pipeline.write import write

    stokes = list(obs.data.stokes)
    out_ch = obs.meta["output_channels"]
    nc = len(out_ch)
    dcfg = job.cfg["deconvolution"]
    joined = job.deconvolves and bool(dcfg["join_channels"] or dcfg["join_polarizations"])
    ngroups = channel_groups(job, nc, joined)
    if ngroups > 1:
        made, parts, chans = grouped_images(job, geom, obs, ngroups)
    else:
        made = image_channels(job, geom, obs)
        chans = list(range(nc))
        parts = None
        if job.deconvolves and not joined:
            with job.timer.stage("deconvolve"):
                parts = deconvolve_images(job, geom, made.kept, made.psf, made.dirty, stokes,
                                          chans)
    psf, dirty, beams, wsums = made.psf, made.dirty, made.beams, made.wsums
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
        if joined:
            with job.timer.stage("deconvolve"):
                deconvolved = deconvolve_cube(job, geom, made.kept, psf, dirty, wsums, beams,
                                              beam_mfs, [oc["freq_hz"] for oc in out_ch])
        else:
            deconvolved = finish_each(job, geom, parts, wsums, beams, beam_mfs)
        images.update(deconvolved.images)
        made.kept.clear()
    wsummary = dict(made.wsummary, per_image=made.per_image,
                    operator_of=f"{stokes[-1]}, output channel {chans[-1]}",
                    channel_groups=ngroups)
    job.signals.defer(True)  # the product is seconds away: finish it rather than lose it
    return write(job, made.backend, images, wcs, obs.summary, wsummary, deconvolved)


@dataclass
class Channels:
    """What :func:`image_channels` made: ``psf``, ``dirty`` (stokes, channel, y, x),
    ``beams`` (stokes, channel, 3), ``wsums`` (stokes, channel), ``per_image`` (the
    weighting summary of each image), ``wsummary`` (the first image's), ``backend`` (the
    last image's) and ``kept`` ((p, c) -> backend, with a deconvolution)."""

    psf: np.ndarray
    dirty: np.ndarray
    beams: np.ndarray
    wsums: np.ndarray
    per_image: list
    wsummary: dict
    backend: object
    kept: dict


def image_channels(job, geom, obs):
    """PSF, beam and dirty image of every (output channel, product) of ``obs``, one after
    another (collective over ``job.comm``): :class:`Channels`."""
    from radimg.pipeline.images import make_images
    from radimg.pipeline.operator import make_backend
    from radimg.pipeline.weights import drop_beyond_uv_grid, weigh

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
        job.log(f"image {stokes[p]}, output channel {out_ch[c].get('index', c) + 1} "
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
        per_image.append({"stokes": stokes[p], "channel": out_ch[c].get("index", c),
                          "weight_sum": wsums[p, c],
                          "samples_weighted": summary.get("samples_weighted"),
                          "samples_beyond_uv_grid": summary["samples_beyond_uv_grid"]})
        wsummary = wsummary or summary
    return Channels(psf, dirty, beams, wsums, per_image, wsummary, backend, kept)


def channel_groups(job, nchan_out, joined):
    """The number of rank groups of this cube (``resources.channel_groups``,
    :func:`radimg.parallel.groups.resolve_groups`)."""
    from radimg.config import ConfigError
    from radimg.parallel.groups import resolve_groups
    from radimg.parallel.mpi import everywhere

    try:
        return resolve_groups(job.cfg["resources"]["channel_groups"], job.comm.size,
                              nchan_out, joined)
    except ConfigError as exc:  # decided from values every rank shares: raised on all
        raise everywhere(exc) from None


def regroup(job, obs, ngroups):
    """This rank's group: its job (the group's communicator and stop signals; quiet except
    on group 0), its :class:`Observation` (the group's output channels of every rank's rows,
    radimg.parallel.groups.move_to_group) and its output channels (collective)."""
    from radimg.parallel.groups import channels_of, group_of, move_to_group, split

    comm = job.comm
    data, out_ch = obs.data, obs.meta["output_channels"]
    multi = data.vis.ndim == 3

    def arrays_of(g):
        cols = np.concatenate([np.arange(*out_ch[c]["chan"])
                               for c in channels_of(len(out_ch), ngroups, g)])
        vis, wgt = data.vis[..., cols], data.weight[..., cols]
        if multi:  # (pol, row, chan) -> rows first for the move
            vis, wgt = vis.transpose(1, 0, 2), wgt.transpose(1, 0, 2)
        return {"uvw": data.uvw, "vis": vis, "weight": wgt}

    moved = move_to_group(comm, ngroups, arrays_of)
    g = group_of(comm.rank, comm.size, ngroups)
    chans = channels_of(len(out_ch), ngroups, g)
    cols = np.concatenate([np.arange(*out_ch[c]["chan"]) for c in chans])
    vis, wgt = moved["vis"], moved["weight"]
    if multi:
        vis = np.ascontiguousarray(vis.transpose(1, 0, 2))
        wgt = np.ascontiguousarray(wgt.transpose(1, 0, 2))
    width = data.chan_width
    sub_data = replace(data, uvw=moved["uvw"], freq=data.freq[cols].copy(), vis=vis,
                       weight=wgt, chan_width=None if width is None else width[cols].copy())
    group_ch, start = [], 0
    for c in chans:
        n = out_ch[c]["chan"][1] - out_ch[c]["chan"][0]
        group_ch.append(dict(out_ch[c], chan=(start, start + n), index=c))
        start += n
    rows = moved["row"]
    span = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 0)
    sub = split(comm, ngroups)
    signals = copy.copy(job.signals)
    signals.comm = sub  # stop checks inside a group agree over the group only
    gjob = replace(job, comm=sub, signals=signals, verbose=job.verbose if g == 0 else 0)
    gobs = Observation(dict(obs.meta, output_channels=group_ch), sub_data, span, obs.summary)
    return gjob, gobs, chans


def grouped_images(job, geom, obs, ngroups):
    """The cube's images made by ``ngroups`` groups of ranks at once (collective): each
    group images (and, with a deconvolution, deconvolves image by image) its own output
    channels, then every image is put in place on every rank. Returns ``(Channels, parts,
    chans)``: the whole cube's images and beams (``backend``, ``wsummary`` and ``kept``
    are this rank's group's), the deconvolution's ``(model, residual, per_image)`` or
    None, and this rank's group's output channels."""
    from radimg.parallel.groups import assemble

    comm = job.comm
    stokes, nc = list(obs.data.stokes), len(obs.meta["output_channels"])
    job.log(f"{ngroups} groups of ranks image the {nc} output channels "
            "(resources.channel_groups)")
    err = made = parts = None
    try:
        gjob, gobs, chans = regroup(job, obs, ngroups)
        obs.data = None  # the rows as read: the group's share replaces them
        made = image_channels(gjob, geom, gobs)
        if job.deconvolves:
            with job.timer.stage("deconvolve"):
                parts = deconvolve_images(gjob, geom, made.kept, made.psf, made.dirty,
                                          stokes, chans)
    except user_errors() as exc:  # raised in one group alike: every group must hear of it
        err = exc
    agree_on_error(comm, err)
    sub = gjob.comm
    idx = (slice(None), chans)
    shape = (len(stokes), nc)
    whole = Channels(
        psf=assemble(comm, sub, np.zeros(shape + geom.shape), made.psf, idx),
        dirty=assemble(comm, sub, np.zeros(shape + geom.shape), made.dirty, idx),
        beams=assemble(comm, sub, np.zeros(shape + (3,)), made.beams, idx),
        wsums=assemble(comm, sub, np.zeros(shape), made.wsums, idx),
        per_image=_gathered(comm, sub, made.per_image, stokes),
        wsummary=comm.bcast(made.wsummary, root=0),
        backend=made.backend, kept=made.kept,
    )
    if parts is not None:
        model, residual, per_image = parts
        parts = (assemble(comm, sub, np.zeros(shape + geom.shape), model, idx),
                 assemble(comm, sub, np.zeros(shape + geom.shape), residual, idx),
                 _gathered(comm, sub, per_image, stokes))
    return whole, parts, chans


def _gathered(comm, sub, items, stokes):
    """The lists of every group's first rank, concatenated on every rank in the order of
    the cube's loop (output channel, then product as in ``stokes``)."""
    parts = comm.allgather(items if sub.Get_rank() == 0 else [])
    flat = [x for part in parts for x in part]
    return sorted(flat, key=lambda x: (x["channel"], stokes.index(x["stokes"])))


def user_errors():
    from radimg.pipeline.common import user_errors as errors

    return errors()


def agree_on_error(comm, err):
    """Collective over all ranks: when a group raised a user error or was stopped by a
    signal (:class:`radimg.pipeline.common.JobInterrupted`), every rank raises it."""
    from radimg.parallel.mpi import everywhere
    from radimg.pipeline.common import JobInterrupted

    token = err
    if isinstance(err, JobInterrupted):  # its keyword-only fields do not pickle
        token = ("interrupted", str(err), err.signal_name, err.checkpoint)
    for t in comm.allgather(token):
        if t is None:
            continue
        if isinstance(t, tuple):
            raise everywhere(JobInterrupted(t[1], signal_name=t[2], checkpoint=t[3],
                                            rank=comm.rank))
        raise everywhere(t)


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


def deconvolve_images(job, geom, backends, psf, dirty, stokes, chans):
    """Every image of the cube deconvolved on its own (collective): the single-image
    driver (CLEAN or ADMM, radimg.pipeline.deconvolve) through the image's own backend,
    without checkpoints. ``chans``: the cube's output channel of each channel here.
    Returns ``(model, residual, per_image)``: (stokes, channel, y, x) images on every rank
    and each image's deconvolution summary."""
    from radimg.parallel.mpi import bcast_array
    from radimg.pipeline.deconvolve import admm, clean

    comm = job.comm
    if job.cfg["output"]["checkpoint"]:
        job.log("a cube's deconvolution writes no checkpoint (output.checkpoint ignored)")
    cfg = dict(job.cfg, output=dict(job.cfg["output"], checkpoint=False))
    one = replace(job, cfg=cfg)
    driver = clean if cfg["deconvolution"]["algorithm"] == "clean" else admm
    model, residual = np.zeros_like(dirty), np.zeros_like(dirty)
    per_image = []
    for (p, c), b in sorted(backends.items()):
        job.log(f"deconvolving {stokes[p]}, output channel {chans[c] + 1}")
        m, r, summary = driver(one, b, geom, psf[p, c], dirty[p, c], None, None)
        model[p, c] = bcast_array(comm, np.ascontiguousarray(m, dtype=np.float64))
        residual[p, c] = r
        per_image.append(dict(summary, stokes=stokes[p], channel=int(chans[c])))
    return model, residual, per_image


def finish_each(job, geom, parts, wsums, beams, beam_mfs):
    """The image-by-image deconvolution's products from :func:`deconvolve_images`' ``parts``
    (the whole cube's): MFS images as the weighted mean, every channel restored with its
    own beam (rank 0).

    Returns
    -------
    radimg.pipeline.deconvolve.Deconvolved
        ``model``, ``residual``, ``restored`` (stokes, channel, y, x) and their ``_mfs``
        images; ``restored`` and ``restored_mfs`` on rank 0 only.
    """
    from radimg.pipeline.deconvolve import Deconvolved

    model, residual, per_image = parts
    model_mfs, residual_mfs = mfs(model, wsums), mfs(residual, wsums)
    restored = restored_mfs = None
    with job.timer.stage("restore"):
        if job.comm.rank == 0:
            restored, restored_mfs = restore_cube(model, residual, model_mfs, residual_mfs,
                                                  beams, beam_mfs, geom.cell_deg)
    images = {"model": model, "residual": residual, "restored": restored,
              "model_mfs": model_mfs, "residual_mfs": residual_mfs,
              "restored_mfs": restored_mfs}
    summary = {
        "algorithm": job.cfg["deconvolution"]["algorithm"],
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
