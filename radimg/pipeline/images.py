"""Stage *images*: the PSF, the restoring beam fitted to it, and the dirty image (global,
normalised by the weight sum), and the WCS of the images."""

from __future__ import annotations

import numpy as np

from radimg.pipeline.common import collective_check
from radimg.progress import Progress


def make_images(job, backend, geom):
    """PSF (stage ``psf``), restoring beam (``beam``) and dirty image (``dirty``).

    Returns
    -------
    psf, dirty : ndarray (npix_y, npix_x) float64, identical on every rank (None on ranks
        other than 0 when the backend's ``images_on_root`` is set)
    beam : (bmaj_deg, bmin_deg, bpa_deg)
    """
    comm, timer, verbose = job.comm, job.timer, job.verbose
    # a run that only writes its images through a small inversion resamples both images
    # after the dirty one (the backend's defers_resampling); the beam is fitted then
    defer = backend.defers_resampling
    with (
        timer.stage("psf"),
        Progress(comm.rank, None, "gridding PSF", verbose=verbose, ticker=True),
    ):
        job.fault_point("psf")
        psf = backend.psf(fine=False) if defer else backend.psf()
    if not defer:
        beam = _fit_beam(job, psf, geom)
    with (
        timer.stage("dirty"),
        Progress(comm.rank, None, "gridding dirty image", verbose=verbose, ticker=True),
    ):
        job.fault_point("dirty")
        dirty = backend.dirty(fine=False) if defer else backend.dirty()
    if defer:
        from radimg.parallel.mpi import ranks_on_root_node, wait_for_root

        # only rank 0 holds the images: it resamples them on its node's cores while the
        # other ranks sleep (instead of busy-polling in the beam fit's broadcast)
        threads = job.nthreads * ranks_on_root_node(comm)
        with timer.stage("resample"):
            dirty = backend.fine(dirty, nthreads=threads)
            psf = backend.fine(psf, nthreads=threads)
            wait_for_root(comm)
        beam = _fit_beam(job, psf, geom)
    if dirty is not None:  # None off rank 0 where only rank 0 keeps the images
        job.log(f"dirty image peak {dirty.max():.4g} Jy/beam, PSF peak {psf.max():.4f}")
    return psf, dirty, beam


def _fit_beam(job, psf, geom):
    """Stage ``beam``. Fitted as soon as the requested PSF is there (before the dirty image
    and any minor cycle; after the dirty image only in a run that just writes its images
    and resamples both at the end), so that a PSF without a main lobe (a user error,
    raised on every rank) costs little; rank 0 fits and warns (once) when it falls back
    to the lobe's second moments."""
    from radimg.deconv.image import fit_beam

    with job.timer.stage("beam"):
        return collective_check(job.comm, fit_beam, psf, geom.cell_deg)


def wcs_info(meta, geom, beam):
    """The ``wcs_info`` of the product's ``/images`` (radimg.io.product.write_product) for
    the MS metadata ``meta``, the image ``geom`` and the restoring ``beam`` (degrees): one
    builder, :func:`radimg.io.wcs.make_wcs_info`, fed from the job's objects."""
    from radimg.io.wcs import make_wcs_info

    return make_wcs_info(
        geom.npix_x, geom.npix_y, geom.cell_rad, tuple(meta["phase_centre"]),
        float(np.mean(np.asarray(meta["freq"], dtype=float))), tuple(beam),
        # what the FITS export needs besides the WCS (radimg.io.wcs.OBS_KEYS)
        bandwidth_hz=float(meta.get("bandwidth_hz", 0.0)),
        stokes="".join(meta.get("stokes", ["I"])),
        date_obs=str(meta.get("date_obs", "")),
        telescope=str(meta.get("telescope", "")),
        observer=str(meta.get("observer", "")),
        field_name=str(meta.get("field_name", "")),
    )
