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
    "SpectralConv",
    "conv_centred",
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


def _connected_to_centre(above, cy, cx):
    """Pixels 4-connected to (cy, cx) through ``above``, grown one ring per pass (numpy)."""
    out = np.zeros_like(above)
    out[cy, cx] = above[cy, cx]
    while True:
        g = out.copy()
        g[1:] |= out[:-1]
        g[:-1] |= out[1:]
        g[:, 1:] |= out[:, :-1]
        g[:, :-1] |= out[:, 1:]
        g &= above
        if np.array_equal(g, out):
            return out
        out = g


def _main_lobe(psf, level=0.35):
    """Pixels of the PSF main lobe: above ``level`` of the peak and connected to the centre
    (CASA's ``psfcutoff`` 0.35 convention). Searched in a window around the centre that
    doubles while the lobe touches its edge (no full-image labelling)."""
    ny, nx = psf.shape
    cy, cx = ny // 2, nx // 2
    h = 16
    while True:
        y0, y1 = max(0, cy - h), min(ny, cy + h + 1)
        x0, x1 = max(0, cx - h), min(nx, cx + h + 1)
        above = psf[y0:y1, x0:x1] > level * psf[cy, cx]
        lobe = _connected_to_centre(above, cy - y0, cx - x0)
        whole = y0 == 0 and x0 == 0 and y1 == ny and x1 == nx
        touches = lobe[0].any() or lobe[-1].any() or lobe[:, 0].any() or lobe[:, -1].any()
        if whole or not touches:
            out = np.zeros(psf.shape, bool)
            out[y0:y1, x0:x1] = lobe
            return out
        h *= 2


def _fit_centred_gaussian(dx, dy, val, p0, iters=100):
    """Least squares of ``exp(-0.5 (a dx^2 + b dy^2 + 2 c dx dy)) - val`` over (a, b, c) by
    Levenberg-Marquardt (3 parameters: numpy is enough, and scipy.optimize would cost a
    second of import time in every run)."""
    basis = np.stack([dx * dx, dy * dy, 2.0 * dx * dy], axis=1)

    def resid(p):
        g = np.exp(-0.5 * (basis @ p))
        return g - val, g

    p = np.asarray(p0, dtype=np.float64)
    r, g = resid(p)
    cost = float(r @ r)
    lam = 1e-3
    for _ in range(iters):
        jac = -0.5 * g[:, None] * basis
        jtj = jac.T @ jac
        jtr = jac.T @ r
        step = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj)), -jtr)
        pn = p + step
        rn, gn = resid(pn)
        cn = float(rn @ rn)
        if cn < cost:
            small = np.abs(step).max() <= 1e-12 * max(np.abs(pn).max(), 1e-300)
            p, r, g, cost, lam = pn, rn, gn, cn, lam * 0.3
            if small or cost == 0.0:
                break
        else:
            lam *= 10.0
            if lam > 1e12:
                break
    return p


def fit_beam(psf, cell_deg):
    """Elliptical Gaussian fitted to the PSF main lobe (least squares, peak fixed at 1).

    The lobe is the pixels above 0.35 of the peak connected to the centre (CASA's
    ``psfcutoff``), so sidelobes and a broad pedestal (MWA's dense core) do not widen the
    beam. WSClean 3.1 fits a whole box instead, and in that version only the x >= 0, y >= 0
    quadrant of the box enters its model (unsigned index arithmetic): on the MWA benchmark PSF
    it reports 5.81' x 4.89' at 113.6 deg where the main lobe is 5.00' x 4.45' at -89.8 deg
    (``scripts/bench_deconv.py`` reproduces WSClean's figures from its own PSF).

    Parameters
    ----------
    psf : ndarray (npix_y, npix_x), peak 1 at the centre.
    cell_deg : float, pixel size in degrees.

    Returns
    -------
    (bmaj_deg, bmin_deg, bpa_deg) : FWHM axes and position angle east of north, degrees.
    """
    psf = np.asarray(psf, dtype=np.float64)
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    lobe = _main_lobe(psf)
    if lobe.sum() < 5:
        from radimg.config import ConfigError

        raise ConfigError(
            f"image.cell_arcsec: the PSF main lobe covers only {int(lobe.sum())} pixel(s), so "
            f'the synthesised beam is not sampled by {cell_deg * 3600:.4g}" pixels and no '
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

    # inverse covariance [[a, c], [c, b]]
    a, b, c = _fit_centred_gaussian(dx, dy, val, [1.0 / cxx, 1.0 / cyy, 0.0])
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


def _good_size(n):
    """Smallest 2^a 3^b 5^c >= n (fast FFT length)."""
    best = 1 << max(0, int(n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def conv_centred(a, k):
    """Linear convolution of image ``a`` with a kernel ``k`` whose centre ``k[ky//2, kx//2]``
    maps ``a[p]`` onto ``p``; the result has ``a``'s shape (numpy real FFTs of a fast
    size; no scipy.signal, whose import alone costs seconds)."""
    a = np.asarray(a, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    sy = _good_size(a.shape[0] + k.shape[0] - 1)
    sx = _good_size(a.shape[1] + k.shape[1] - 1)
    f = np.fft.rfft2(a, (sy, sx))
    f *= np.fft.rfft2(k, (sy, sx))
    full = np.fft.irfft2(f, (sy, sx))
    cy, cx = k.shape[0] // 2, k.shape[1] // 2
    return full[cy : cy + a.shape[0], cx : cx + a.shape[1]]


class SpectralConv:
    """``conv_centred`` of images of one ``shape`` with fixed kernels, the kernels' spectra
    computed once (minor cycles convolve with the same PSF / scale kernels many times).
    All kernels share one fast FFT size, so an image's spectrum (``spectrum``) serves every
    kernel (``apply``)."""

    def __init__(self, shape, kernels):
        self.shape = tuple(shape)
        ks = [np.asarray(k, dtype=np.float64) for k in kernels]
        self.size = (
            _good_size(self.shape[0] + max(k.shape[0] for k in ks) - 1),
            _good_size(self.shape[1] + max(k.shape[1] for k in ks) - 1),
        )
        self.centre = [(k.shape[0] // 2, k.shape[1] // 2) for k in ks]
        self.spectra = [np.fft.rfft2(k, self.size) for k in ks]

    def spectrum(self, a):
        return np.fft.rfft2(np.asarray(a, dtype=np.float64), self.size)

    def apply(self, spec, i):
        """The image whose spectrum is ``spec`` convolved with kernel ``i``."""
        full = np.fft.irfft2(spec * self.spectra[i], self.size)
        cy, cx = self.centre[i]
        return full[cy : cy + self.shape[0], cx : cx + self.shape[1]]

    def __call__(self, a, i=0):
        return self.apply(self.spectrum(a), i)


def restore(model, residual, beam_deg, cell_deg):
    """Restored image (Jy/beam) = model (Jy/pixel) convolved with the peak-1 restoring beam
    plus the residual (Jy/beam)."""
    # crop the kernel to where it matters so the FFT stays small
    cy, cx = model.shape[0] // 2, model.shape[1] // 2
    r = int(min(cy, cx, max(8, 5 * beam_deg[0] / cell_deg)))
    g = gaussian_beam_image((2 * r + 1, 2 * r + 1), beam_deg, cell_deg)
    return conv_centred(model, g) + residual
