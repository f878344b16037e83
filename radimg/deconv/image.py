"""Image-plane helpers of deconvolution: robust noise, masks, restoring beam, restoration.

Pure array functions (no MPI). Images are ``(npix_y, npix_x)``, north up, east left
(docs/internals.md): x runs west, y runs north.
"""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = [
    "auto_mask",
    "box_mask",
    "fit_beam",
    "gaussian_beam_image",
    "load_mask",
    "mad_sigma",
    "restore",
]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def mad_sigma(image, mask=None):
    """Robust noise: 1.4826 * median(|x - median(x)|) over ``mask`` (all pixels if None)."""
    a = np.asarray(image, dtype=np.float64)
    if mask is not None:
        a = a[np.asarray(mask, bool)]
    if a.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(a - np.median(a))))


def box_mask(shape, boxes):
    """Boolean mask that is True inside the pixel boxes ``[x0, y0, x1, y1]`` (inclusive,
    0-based, x = column, y = row); all True if ``boxes`` is empty."""
    if not boxes:
        return np.ones(shape, bool)
    m = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        m[max(0, min(y0, y1)) : max(y0, y1) + 1, max(0, min(x0, x1)) : max(x0, x1) + 1] = True
    return m


def load_mask(path, shape):
    """A clean mask from a FITS image or an HDF5 file (nonzero = clean here).

    FITS: the primary HDU's data, degenerate axes squeezed (WSClean/CASA masks work).
    HDF5: dataset ``mask``, else ``/images/mask``, else the first 2-D dataset found.
    The array must have ``shape`` = (npix_y, npix_x) in radimg's orientation (same as
    the FITS images radimg and WSClean write).

    Raises
    ------
    ValueError
        Unreadable file, no 2-D array, or the wrong shape.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ValueError(f"deconvolution.mask_path: file not found: {p}")
    low = p.lower()
    try:
        if low.endswith((".fits", ".fit", ".fts", ".fits.gz")):
            from astropy.io import fits

            with fits.open(p) as h:
                data = np.asarray(h[0].data)
        else:
            import h5py

            with h5py.File(p, "r") as f:
                data = None
                for name in ("mask", "images/mask"):
                    if name in f:
                        data = f[name][()]
                        break
                if data is None:
                    found = []
                    f.visititems(
                        lambda n, o: (
                            found.append(n) if isinstance(o, h5py.Dataset) and o.ndim >= 2 else None
                        )
                    )
                    if not found:
                        raise ValueError("no 2-D dataset")
                    data = f[found[0]][()]
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"deconvolution.mask_path: cannot read {p}: {exc}") from None
    data = np.squeeze(np.asarray(data))
    if data.shape != tuple(shape):
        raise ValueError(
            f"deconvolution.mask_path: {p} holds a {data.shape} array; the image is {tuple(shape)}"
        )
    return np.nan_to_num(data.astype(np.float64)) != 0


def auto_mask(model, grow_pix=1):
    """Auto-mask (WSClean ``-auto-mask`` style): the pixels that already hold components,
    grown by ``grow_pix`` pixels so a component may move by one pixel."""
    m = np.asarray(model) != 0
    if grow_pix > 0 and m.any():
        from scipy.ndimage import binary_dilation

        m = binary_dilation(m, iterations=int(grow_pix))
    return m


def _main_lobe(psf, level=0.35):
    """Pixels of the PSF main lobe: connected to the centre and above ``level``."""
    from scipy.ndimage import label

    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    lab, _ = label(psf > level * psf[cy, cx])
    return lab == lab[cy, cx]


def fit_beam(psf, cell_deg):
    """Elliptical Gaussian fitted to the PSF main lobe (least squares, peak fixed at 1).

    Parameters
    ----------
    psf : ndarray (npix_y, npix_x), peak 1 at the centre.
    cell_deg : float, pixel size in degrees.

    Returns
    -------
    (bmaj_deg, bmin_deg, bpa_deg) : FWHM axes and position angle east of north, degrees.
    """
    from scipy.optimize import least_squares

    psf = np.asarray(psf, dtype=np.float64)
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    lobe = _main_lobe(psf)
    if lobe.sum() < 5:
        from radimg.config import ConfigError

        raise ConfigError(
            f"image.cell_arcsec: the PSF main lobe covers only {int(lobe.sum())} pixel(s), so "
            f"the synthesised beam is not sampled by {cell_deg * 3600:.4g}\" pixels and no "
            "restoring beam can be fitted; use a cell of at most a third of the beam width"
        )
    ys, xs = np.nonzero(lobe)
    dy = (ys - cy).astype(float)
    dx = (xs - cx).astype(float)
    val = psf[ys, xs]
    # start from the second moments of the lobe
    w = np.clip(val, 1e-6, None)
    cxx = max(np.sum(w * dx * dx) / w.sum(), 0.25)
    cyy = max(np.sum(w * dy * dy) / w.sum(), 0.25)

    def model(p):
        a, b, c = p  # inverse covariance [[a, c], [c, b]] via a Cholesky-free form
        return np.exp(-0.5 * (a * dx * dx + b * dy * dy + 2.0 * c * dx * dy))

    p0 = np.array([1.0 / cxx, 1.0 / cyy, 0.0])
    sol = least_squares(lambda p: model(p) - val, p0, method="lm")
    a, b, c = sol.x
    inv = np.array([[a, c], [c, b]])
    cov = np.linalg.inv(inv)
    evals, evecs = np.linalg.eigh(cov)
    evals = np.clip(evals, 1e-12, None)
    smaj, smin = math.sqrt(evals[1]), math.sqrt(evals[0])
    vx, vy = evecs[0, 1], evecs[1, 1]  # major-axis direction in (x, y) pixels
    # x runs west: east component is -vx; PA from north (+y) through east
    pa = math.degrees(math.atan2(-vx, vy))
    pa = (pa + 90.0) % 180.0 - 90.0
    return smaj * FWHM_PER_SIGMA * cell_deg, smin * FWHM_PER_SIGMA * cell_deg, pa


def gaussian_beam_image(shape, beam_deg, cell_deg):
    """Peak-1 elliptical Gaussian (bmaj, bmin, bpa in degrees) centred at [ny//2, nx//2]."""
    bmaj, bmin, bpa = beam_deg
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    dx = (x - nx // 2).astype(float)
    dy = (y - ny // 2).astype(float)
    smaj = bmaj / cell_deg / FWHM_PER_SIGMA
    smin = bmin / cell_deg / FWHM_PER_SIGMA
    t = math.radians(bpa)
    # unit vectors of the major axis in (x, y) pixels: east = -x
    ux, uy = -math.sin(t), math.cos(t)
    pmaj = dx * ux + dy * uy
    pmin = -dx * uy + dy * ux
    return np.exp(-0.5 * ((pmaj / smaj) ** 2 + (pmin / smin) ** 2))


def restore(model, residual, beam_deg, cell_deg):
    """Restored image (Jy/beam) = model (Jy/pixel) convolved with the peak-1 restoring beam
    plus the residual (Jy/beam)."""
    from scipy.signal import fftconvolve

    g = gaussian_beam_image(model.shape, beam_deg, cell_deg)
    # crop the kernel to where it matters so the FFT stays small
    cy, cx = model.shape[0] // 2, model.shape[1] // 2
    r = int(min(cy, cx, max(8, 5 * beam_deg[0] / cell_deg)))
    k = g[cy - r : cy + r + 1, cx - r : cx + r + 1]
    return fftconvolve(model, k, mode="same") + residual
