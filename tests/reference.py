"""Brute-force oracles: the direct Fourier transform of the measurement equation.

Slow on purpose and written in plain numpy, independent of every fast path in radimg.
Conventions are those of docs/internals.md (l toward east, m toward north, image
``[iy, ix]`` with ``l = -(ix - npix_x//2) * cell``, ``m = (iy - npix_y//2) * cell``).
The model image is in Jy/pixel and neither direction carries a ``1 / n``: the measurement
equation's ``1 / n`` cancels against the solid angle of a pixel (``dOmega = dl dm / n``), so a
point source of flux S is ``S exp(...)`` (:func:`point_source_vis`), as in WSClean and CASA.
"""

import numpy as np

C_LIGHT = 299792458.0


def pixel_lm(npix_x, npix_y, cell_rad, pixels=None):
    """Direction cosines of image pixels.

    Parameters
    ----------
    pixels : ndarray (npts, 2) int, optional
        ``(iy, ix)`` pairs; all pixels when omitted.

    Returns
    -------
    l, m, n : ndarray (npts,) float64
    """
    if pixels is None:
        iy, ix = np.meshgrid(np.arange(npix_y), np.arange(npix_x), indexing="ij")
        iy, ix = iy.ravel(), ix.ravel()
    else:
        pixels = np.asarray(pixels)
        iy, ix = pixels[:, 0], pixels[:, 1]
    l = -(ix - npix_x // 2) * cell_rad
    m = (iy - npix_y // 2) * cell_rad
    n = np.sqrt(1.0 - l * l - m * m)
    return l, m, n


def _uvw_lambda(uvw, freq):
    f = np.asarray(freq, dtype=np.float64) / C_LIGHT
    u = (uvw[:, 0:1] * f[None, :]).ravel()
    v = (uvw[:, 1:2] * f[None, :]).ravel()
    w = (uvw[:, 2:3] * f[None, :]).ravel()
    return u, v, w


def dft_dirty(uvw, freq, vis, wgt, npix_x, npix_y, cell_rad, pixels=None, chunk=256):
    """``D = sum_k wgt_k Re[V_k exp(-2 pi i (u l + v m + w (n-1)))]`` at the given pixels.

    Returns ndarray (npts,) float64, or (npix_y, npix_x) when ``pixels`` is None.
    """
    u, v, w = _uvw_lambda(uvw, freq)
    vw = (np.asarray(vis) * (1.0 if wgt is None else np.asarray(wgt))).ravel().astype(np.complex128)
    l, m, n = pixel_lm(npix_x, npix_y, cell_rad, pixels)
    out = np.empty(l.size)
    for s in range(0, l.size, chunk):
        sl = slice(s, s + chunk)
        ph = np.outer(l[sl], u) + np.outer(m[sl], v) + np.outer(n[sl] - 1.0, w)
        out[sl] = (np.exp(-2j * np.pi * ph) @ vw).real
    if pixels is None:
        return out.reshape(npix_y, npix_x)
    return out


def dft_predict(uvw, freq, image, cell_rad, chunk=4096):
    """Forward operator: ``V_k = sum_pix x exp(+2 pi i (u l + v m + w (n-1)))`` (x in Jy/pixel).

    Only the non-zero pixels of ``image`` (npix_y, npix_x) contribute.
    Returns ndarray (row, chan) complex128.
    """
    npix_y, npix_x = image.shape
    iy, ix = np.nonzero(image)
    l, m, n = pixel_lm(npix_x, npix_y, cell_rad, np.stack([iy, ix], axis=1))
    amp = image[iy, ix].astype(np.float64)
    u, v, w = _uvw_lambda(uvw, freq)
    out = np.zeros(u.size, dtype=np.complex128)
    for s in range(0, u.size, chunk):
        sl = slice(s, s + chunk)
        ph = np.outer(u[sl], l) + np.outer(v[sl], m) + np.outer(w[sl], n - 1.0)
        out[sl] = np.exp(2j * np.pi * ph) @ amp
    return out.reshape(uvw.shape[0], len(freq))


def point_source_vis(uvw, freq, l0, m0, flux=1.0):
    """Visibilities of one point source of ``flux`` Jy at direction cosines (l0, m0)."""
    n0 = np.sqrt(1.0 - l0 * l0 - m0 * m0)
    u, v, w = _uvw_lambda(uvw, freq)
    ph = u * l0 + v * m0 + w * (n0 - 1.0)
    return (flux * np.exp(2j * np.pi * ph)).reshape(uvw.shape[0], len(freq))
