"""Stage *weights*: samples beyond the uv grid dropped (before the operator is built), then
natural / uniform / Briggs imaging weights and taper from the global density grid (one
Allreduce; :mod:`radimg.ops.weighting`).

Names: the *data weight* is the MS's (``WEIGHT``/``WEIGHT_SPECTRUM``, 0 where flagged), the
*imaging weight* is the data weight times the weighting scheme's factor and taper, and the
*weight sum* is the imaging weights' sum over every rank (the images' normalisation).
"""

from __future__ import annotations

import warnings

import numpy as np

from radimg.constants import C_LIGHT
from radimg.pipeline.common import config_error, everywhere


def drop_beyond_uv_grid(comm, data, geom):
    """Give weight 0 to the samples beyond the uv grid, as WSClean does (issue #12), and
    count them; warn (rank 0) when there are any.

    Samples with ``|u|`` or ``|v|`` beyond ``1 / (2 cell)`` fall outside both the weight
    grid and the imaging grid (whose uv extent does not depend on the padding): gridded,
    they would fold back (alias) onto shorter spacings and, under uniform/Briggs, carry
    their raw natural weight beside density-normalised ones. They are dropped before the
    operator is built, so they take no part in gridding, load balancing or normalisation at
    any rank count (radimg.ops.weighting.drop_beyond_grid, docs/internals.md).

    Parameters
    ----------
    comm : mpi4py communicator (collective)
    data : radimg.io.ms.VisData, this rank's rows; ``data.weight`` is changed in place
    geom : radimg.pipeline.context.ImageGeometry

    Returns
    -------
    dict, the start of the product's ``weighting_json``.
    """
    from mpi4py import MPI

    from radimg.ops.weighting import WEIGHT_PADDING, drop_beyond_grid, weight_grid

    npix_x, npix_y, cell_rad = geom.npix_x, geom.npix_y, geom.cell_rad
    cell_arcsec = geom.cell_arcsec
    grid = weight_grid(npix_x, npix_y, cell_rad, WEIGHT_PADDING)
    n_before = int(np.count_nonzero(data.weight))
    n_drop, n_rows = drop_beyond_grid(data.uvw, data.freq, data.weight, npix_x, npix_y, cell_rad)
    lam = C_LIGHT / float(np.max(data.freq))
    uv = np.abs(data.uvw[:, :2]).max(axis=1) / lam if data.uvw.size else np.zeros(0)
    counts = comm.allreduce(
        np.array([n_drop, n_rows, n_before, uv.size], dtype=np.int64), op=MPI.SUM
    )
    n_drop, n_rows, n_before, n_rows_all = (int(c) for c in counts)
    uv_max = comm.allreduce(float(uv.max()) if uv.size else 0.0, op=MPI.MAX)
    umax = grid.uv_max_lambda[0]
    need = f"{umax / uv_max * cell_arcsec:.3g}" if uv_max > 0 else "a smaller"
    if n_drop == n_before:
        raise everywhere(config_error(
            f"image.cell_arcsec: {cell_arcsec:g} arcsec: every one of the {n_before} unflagged "
            f"samples lies beyond the uv grid (which holds |u|, |v| < {umax:.0f} wavelengths "
            "at this cell); "
            f"nothing to image. The longest baselines ({uv_max:.0f} wavelengths) need cells "
            f"<= {need} arcsec."
        ))
    if n_drop and comm.rank == 0:
        warnings.warn(
            f"image.cell_arcsec: {cell_arcsec:g} arcsec is too coarse for the longest "
            f"baselines ({uv_max:.0f} wavelengths need <= {need} arcsec): {n_drop} of "
            f"{n_before} unflagged samples ({n_rows} of {n_rows_all} rows) lie beyond the uv "
            f"grid (which holds |u|, |v| < {umax:.0f} wavelengths at this cell) and are left "
            "out, as WSClean does, rather than aliased; the PSF is undersampled. Use a smaller "
            "cell to image them.",
            stacklevel=3,
        )
    return {
        **grid.summary(),
        "padding": WEIGHT_PADDING,
        "samples_unflagged": n_before,
        "samples_beyond_uv_grid": n_drop,
        "rows_beyond_uv_grid": n_rows,
    }


def weigh(job, geom, freq, uvw, data_weight, summary):
    """Imaging weights of this rank's samples (stage ``weights``; collective).

    Parameters
    ----------
    job : radimg.pipeline.context.Job
    geom : radimg.pipeline.context.ImageGeometry
    freq : ndarray (chan,) float64, Hz
    uvw : ndarray (row, 3) float64, metres, the samples the operator grids on this rank
    data_weight : ndarray (row, chan) float32 | float64, their data weights
    summary : dict, the product's ``weighting_json`` (from :func:`drop_beyond_uv_grid`),
        completed here

    Returns
    -------
    imaging_weight : ndarray (row, chan), dtype of ``data_weight``
    weight_sum : float, the sum of the imaging weights over every rank
    """
    from mpi4py import MPI

    from radimg.ops.weighting import density_grid, imaging_weights

    comm, img_cfg = job.comm, job.cfg["image"]
    npix_x, npix_y, cell_rad = geom.npix_x, geom.npix_y, geom.cell_rad
    scheme = img_cfg["weighting"]
    with job.timer.stage("weights"):
        job.fault_point("weights")
        local = density = None
        if scheme != "natural":
            local = density_grid(uvw, freq, data_weight, npix_x, npix_y, cell_rad)
            density = np.empty_like(local)
            comm.Allreduce(local, density, op=MPI.SUM)
            local = None  # not needed past the Allreduce: one grid fewer at the rank filter
        imaging_weight = imaging_weights(
            uvw,
            freq,
            data_weight,
            scheme=scheme,
            robust=float(img_cfg["robust"]),
            npix_x=npix_x,
            npix_y=npix_y,
            cell_rad=cell_rad,
            taper_arcsec=float(img_cfg["taper_arcsec"]),
            density=density,
        ).astype(data_weight.dtype, copy=False)
        # the float64 density and factor grids (half-plane, ~0.72 of an image each) are
        # not needed after this (plan.py's IMAGE_ARRAYS does not count them at the peak)
        del local, density
        weight_sum = comm.allreduce(float(imaging_weight.sum(dtype=np.float64)))
        summary.update(
            scheme=scheme,
            robust=float(img_cfg["robust"]) if scheme == "briggs" else None,
            taper_arcsec=float(img_cfg["taper_arcsec"]),
            samples_weighted=int(comm.allreduce(int(np.count_nonzero(imaging_weight)))),
        )
    job.log(
        f"weights: {scheme}"
        + (f" (robust {float(img_cfg['robust']):g})" if scheme == "briggs" else "")
        + f", {summary['samples_weighted']} samples weighted, "
        f"{summary['samples_beyond_uv_grid']} beyond the uv grid left out "
        f"(weight grid {summary['grid_shape'][0]} x "
        f"{summary['grid_shape'][1]}, uv cell "
        f"{summary['uv_cell_lambda'][0]:.4g} wavelengths)"
    )
    return imaging_weight, weight_sum
