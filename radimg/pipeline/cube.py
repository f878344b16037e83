"""Dirty cubes (issue #15): several polarisation products (``image.stokes``) and/or output
channels (``image.channels_out``), each image made as the single-image pipeline makes one.

Every (output channel, product) image has its own samples (the product's visibilities and
data weights in the output channel's input channels, :func:`radimg.io.ms.output_channels`),
its own imaging weights (natural / uniform / Briggs from its own density grid, as WSClean
weights each output channel), its own operator, PSF and restoring beam, and is normalised
by its own weight sum. The multi-frequency image of a product (``<name>_mfs``) is the
weight-sum-weighted mean of its channel images, which equals the image of all its samples
with those per-channel imaging weights (WSClean's MFS image of ``-channels-out``).

Deconvolution of a cube is refused before any work (radimg.pipeline.preflight.
check_deconvolvable): joined-channel and joined-polarisation deconvolution are not built.

One imaging backend at a time is alive: the loop builds it on the image's samples, makes
the PSF and the dirty image, and drops it; the last one gives the product its operator,
load-balance and transfer figures (the ``/run`` record says which image they belong to).
"""

from __future__ import annotations

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
    for p, c, sub in image_slices(obs):
        job.log(f"image {stokes[p]}, output channel {c + 1} of {nc} "
                f"({out_ch[c]['freq_hz'] / 1e6:.4f} MHz)")
        backend = None  # the previous image's operator and samples go before the next
        summary = drop_beyond_uv_grid(job.comm, sub.data, geom)
        backend = make_backend(
            job, geom, sub, partial(weigh, job, geom, sub.data.freq, summary=summary)
        )
        psf[p, c], dirty[p, c], beams[p, c] = make_images(job, backend, geom)
        wsums[p, c] = backend.weight_sum
        per_image.append({"stokes": stokes[p], "channel": c, "weight_sum": wsums[p, c],
                          "samples_weighted": summary.get("samples_weighted"),
                          "samples_beyond_uv_grid": summary["samples_beyond_uv_grid"]})
        wsummary = wsummary or summary
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
    wsummary = dict(wsummary, per_image=per_image,
                    operator_of=f"{stokes[-1]}, output channel {nc - 1}")
    job.signals.defer(True)  # the product is seconds away: finish it rather than lose it
    return write(job, backend, images, wcs, obs.summary, wsummary, None)
